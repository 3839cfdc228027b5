import copy

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast.engine import Engine, Float32Island, to_low_precision
from deblurfast.models import IOConvention
from deblurfast.nn import DeformConv2d

IO = IOConvention(channel_order="BGR", value_range=(-0.5, 0.5), multiple=8, pad_mode="reflect", clamp=True)


class Net(nn.Module):
    """A small stand-in network: a deblurfast layer, an InstanceNorm (a float32 island in 16-bit) and a residual."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.dcn = DeformConv2d(8, 8, 3, padding=1, backend="reference")
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0
        return x + 0.1 * self.tail(torch.relu(self.dcn(self.norm(self.head(x)), None)))


def make_model():
    torch.manual_seed(0)
    m = Net()
    m.io = IO
    return m


def frames(n=3, h=21, w=30):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_engine_equals_the_plain_model_float32_cpu():
    plain = make_model()
    engine = Engine(copy.deepcopy(plain), device="cpu", backend="cpu,reference")
    assert engine.model.dcn.backend == "cpu,reference" and not engine.model.training
    for frame in frames():
        want = deblurfast.deblur(plain, frame)
        got = engine.deblur(frame)
        assert got.dtype == np.uint8 and got.shape == frame.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # rounding of the last bit only


def test_low_precision_keeps_normalization_in_float32():
    m = to_low_precision(make_model(), torch.bfloat16)
    assert isinstance(m.norm, Float32Island) and m.norm.module.weight.dtype == torch.float32
    assert m.head.weight.dtype == torch.bfloat16 and m.dcn.weight.dtype == torch.bfloat16
    x = torch.randn(1, 3, 16, 16)
    y = m(x.bfloat16())
    assert y.dtype == torch.bfloat16
    ref = make_model()(x)
    assert (y.float() - ref).abs().max() < 0.05


def test_engine_bfloat16_cpu_within_tolerance():
    plain = make_model()
    engine = Engine(copy.deepcopy(plain), device="cpu", dtype=torch.bfloat16, backend="reference")
    for frame in frames(2):
        diff = np.abs(engine.deblur(frame).astype(int) - deblurfast.deblur(plain, frame).astype(int))
        assert diff.max() <= 6, diff.max()  # bfloat16 keeps ~3 significant digits; 6/255 < 2.5%


def test_stream_equals_frame_by_frame_cpu():
    engine = Engine(make_model(), device="cpu", backend="reference")
    fs = frames(4)
    streamed = list(engine.stream(iter(fs)))
    assert len(streamed) == 4
    for s, f in zip(streamed, fs):
        assert np.array_equal(s, engine.deblur(f))


def test_engine_checks_its_arguments():
    with pytest.raises(ValueError, match="has no `io` convention"):
        Engine(nn.Conv2d(3, 3, 1), device="cpu")
    with pytest.raises(ValueError, match="dtype must be"):
        Engine(make_model(), device="cpu", dtype=torch.int8)
    engine = Engine(make_model(), device="cpu")
    with pytest.raises(ValueError, match="uint8 or uint16 \\(H, W, 3\\)"):
        engine.deblur(np.zeros((8, 8, 3), dtype=np.float32))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_cuda_graph_equals_eager(dtype):
    plain = make_model()
    graphed = Engine(copy.deepcopy(plain), device="cuda", dtype=dtype, cuda_graph=True)
    eager = Engine(copy.deepcopy(plain), device="cuda", dtype=dtype, cuda_graph=False)
    for frame in frames(3):
        a, b = graphed.deblur(frame), eager.deblur(frame)
        assert np.array_equal(a, b)
    assert len(graphed._graphs) == 1  # one capture for one frame size
    reference = deblurfast.deblur(plain, frames(1)[0])
    tol = 1 if dtype is None else 6
    assert np.abs(graphed.deblur(frames(1)[0]).astype(int) - reference.astype(int)).max() <= tol


@pytest.mark.cuda
def test_cuda_stream_equals_frame_by_frame():
    engine = Engine(make_model(), device="cuda", dtype=torch.float16)
    fs = frames(6, 64, 96)
    streamed = list(engine.stream(fs))
    assert len(streamed) == len(fs)
    for s, f in zip(streamed, fs):
        assert np.array_equal(s, engine.deblur(f))
