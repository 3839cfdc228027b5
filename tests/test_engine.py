import copy
import gc
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast._device_constants import clear_device_constant_caches
from deblurfast.engine import CpuPath, Engine, Float32Island, cpu_path, to_low_precision
from deblurfast.models import IOConvention
from deblurfast.nn import BlurAwareAttention, DeformConv2d
from tiny_model import TinyDeblurNet

IO = IOConvention(channel_order="BGR", value_range=(-0.5, 0.5), multiple=8, pad_mode="reflect", clamp=True)


def make_model():
    torch.manual_seed(0)
    m = TinyDeblurNet(8, multiple=8)
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


def test_stream_equals_the_plain_model_frame_by_frame_cpu():
    """Engine.stream (the accelerated, channels_last model, frames from a generator) against
    deblurfast.deblur on the plain reference model, frame by frame and in order."""
    plain = make_model()
    engine = Engine(copy.deepcopy(plain), device="cpu", backend="cpu,reference")
    fs = [f.copy() for f in frames(4)]
    streamed = list(engine.stream(f for f in fs))
    assert len(streamed) == 4
    for i, (s, f) in enumerate(zip(streamed, fs)):
        assert s.dtype == np.uint8 and s.shape == f.shape
        assert np.abs(s.astype(int) - deblurfast.deblur(plain, f).astype(int)).max() <= 1, i
        assert np.array_equal(f, frames(4)[i])  # inputs are not written


# -- the CPU path, chosen by measurement ----------------------------------------------------


@pytest.fixture
def fresh_cpu_choices(monkeypatch):
    """No choice remembered from another test's engine."""
    monkeypatch.setattr(cpu_path, "_CHOSEN", {})


@pytest.mark.parametrize("fastest", [CpuPath("reference", True), CpuPath("auto", False), CpuPath("auto", True)])
def test_cpu_engine_runs_the_path_it_measured_fastest(monkeypatch, fresh_cpu_choices, fastest):
    """Whatever the timings, the engine keeps the fastest path, sets the model to it (its
    layers' backend, its layout) and still deblurs as the plain model does; a second engine of
    the same model reuses the choice without measuring."""
    measured = []

    def fake_measure(path, forward, x):
        measured.append(path)
        assert x.shape[-2:] == (16, 24) and x.dtype == torch.float32  # the first input, padded to 8
        assert forward(x.contiguous(memory_format=torch.channels_last) if path.channels_last else x).shape == x.shape
        return 1.0 if path == fastest else 2.0 + len(measured)

    monkeypatch.setattr(cpu_path, "measure_path", fake_measure)
    plain = make_model()
    engine = Engine(copy.deepcopy(plain), device="cpu")
    frame = frames(1, 13, 22)[0]
    got = engine.deblur(frame)
    assert set(measured) == set(cpu_path.candidates()) and len(measured) == 4
    assert engine.cpu_path == fastest and engine.cpu_timings[fastest] == 1.0
    assert engine.model.dcn.backend == fastest.backend
    assert engine.model.dcn.weight.is_contiguous(memory_format=torch.channels_last) == fastest.channels_last
    assert np.abs(got.astype(int) - deblurfast.deblur(plain, frame).astype(int)).max() <= 1
    again = Engine(copy.deepcopy(plain), device="cpu")
    again.deblur(frame)
    assert len(measured) == 4 and again.cpu_path == fastest and again.cpu_timings == {}


def test_cpu_engine_measures_only_the_paths_its_arguments_allow(monkeypatch, fresh_cpu_choices):
    measured = []
    monkeypatch.setattr(cpu_path, "measure_path", lambda path, forward, x: measured.append(path) or len(measured))
    Engine(make_model(), device="cpu", backend="cpu,reference").deblur(frames(1)[0])
    assert measured == [CpuPath("cpu,reference", False), CpuPath("cpu,reference", True)]
    measured.clear()
    engine = Engine(make_model(), device="cpu", channels_last=True, cpu_path=None)
    engine.deblur(frames(1)[0])
    assert measured == [CpuPath("auto", True), CpuPath("reference", True)] and engine.cpu_path == CpuPath("auto", True)
    measured.clear()
    forced = Engine(make_model(), device="cpu", cpu_path=CpuPath("reference", True))
    forced.deblur(frames(1)[0])
    assert measured == [] and forced.cpu_path == CpuPath("reference", True) and forced.model.dcn.backend == "reference"
    with pytest.raises(TypeError, match="cpu_path must be a deblurfast.engine.CpuPath or None, got 'fast'"):
        Engine(make_model(), device="cpu", cpu_path="fast")


@pytest.mark.parametrize("compiled_faster", [True, False])
def test_cpu_engine_compiles_only_the_fastest_plain_path(monkeypatch, fresh_cpu_choices, compiled_faster):
    """With compile=True the four plain paths are timed, then only the fastest one's compiled twin
    (a compile costs about a minute); the engine keeps whichever of all it timed is fastest."""
    measured = []
    fastest_plain = CpuPath("reference", True)

    def fake_measure(path, forward, x):
        measured.append(path)
        if path.compiled:
            return 0.5 if compiled_faster else 3.0
        return 1.0 if path == fastest_plain else 2.0 + len(measured)

    monkeypatch.setattr(cpu_path, "measure_path", fake_measure)
    plain, frame = make_model(), frames(1, 13, 22)[0]
    engine = Engine(copy.deepcopy(plain), device="cpu", compile=True)
    got = engine.deblur(frame)
    twin = CpuPath("reference", True, compiled=True)
    assert set(measured[:4]) == {p for p in cpu_path.candidates() if not p.compiled} and measured[4:] == [twin]
    assert engine.cpu_path == (twin if compiled_faster else fastest_plain)
    assert np.abs(got.astype(int) - deblurfast.deblur(plain, frame).astype(int)).max() <= 1


def test_cpu_engine_measures_for_real_and_every_path_deblurs_alike(fresh_cpu_choices):
    """The real timings (no fake): every path gets a positive time, the engine keeps the least,
    and each path, compiled by inductor with frozen weights included, gives the plain model's image."""
    plain, frame = make_model(), frames(1, 40, 56)[0]
    want = deblurfast.deblur(plain, frame).astype(int)
    engine = Engine(copy.deepcopy(plain), device="cpu")
    assert np.abs(engine.deblur(frame).astype(int) - want).max() <= 1
    assert len(engine.cpu_timings) == 4 and all(t > 0 for t in engine.cpu_timings.values())
    assert engine.cpu_path == min(engine.cpu_timings, key=engine.cpu_timings.get)
    for path in (CpuPath("reference", True), CpuPath("auto", False, compiled=True)):
        forced = Engine(copy.deepcopy(plain), device="cpu", cpu_path=path)
        assert np.abs(forced.deblur(frame).astype(int) - want).max() <= 1, path


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


# -- CUDA graphs and streams on a GPU (issue 12 items 13-18; their CPU side: test_engine_graphs.py) ----------


@pytest.fixture
def no_fallback():
    """A capture that fails (the engine warns and runs eagerly) fails the test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Engine: capturing")
        yield


class CachedConstantsNet(nn.Module):
    """Triton DCN (cached channel-segment tables) and BANet's fused blur-aware block (cached index
    maps and one-hot selectors): kernels that a graph captures reading cached device tensors."""

    def __init__(self, width=16):
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.dcn = DeformConv2d(width, width, 3, padding=1)
        self.offset = nn.Conv2d(width, 18, 3, padding=1)
        self.ba = BlurAwareAttention(width)
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        return x + self.tail(torch.relu(self.ba(self.dcn(f, self.offset(f)))))


def cached_constants_model():
    torch.manual_seed(0)
    m = CachedConstantsNet()
    m.io = IO
    return m


@pytest.mark.cuda
def test_cuda_graph_survives_the_constant_caches_evicting(no_fallback):
    """Item 16: the caches' tensors were freed on eviction and their memory reused, under a graph
    that reads them by address; now each graph holds what it was captured with."""
    engine = Engine(cached_constants_model(), device="cuda", backend="triton,reference")
    x = torch.rand(1, 3, 48, 64, device="cuda") - 0.5
    want = engine.run(x)
    assert len(engine._graphs) == 1
    clear_device_constant_caches()
    gc.collect()
    junk = []
    for stream in (engine._capture_stream, torch.cuda.current_stream()):
        with torch.cuda.stream(stream):  # freed blocks are reused by allocations on their stream
            junk += [torch.zeros(n, dtype=torch.int32, device="cuda") for n in range(1, 1025)]
    torch.cuda.synchronize()
    assert torch.equal(engine.run(x), want)


@pytest.mark.cuda
def test_cuda_graph_memory_is_bounded_over_many_sizes(no_fallback):
    """Item 15: one graph and one private pool per size, never freed, grew GPU memory with every
    new image size; now max_graphs graphs share one pool."""
    engine = Engine(cached_constants_model(), device="cuda", max_graphs=2)
    sizes = [(512 - 16 * i, 512) for i in range(12)]  # largest first: later captures fit in the pool
    for i, (h, w) in enumerate(sizes):
        engine.run(torch.rand(1, 3, h, w, device="cuda"))
        if i == 1:
            torch.cuda.synchronize()
            after_two = torch.cuda.memory_reserved()
    torch.cuda.synchronize()
    assert len(engine._graphs) == 2
    assert torch.cuda.memory_reserved() <= 2 * after_two, (torch.cuda.memory_reserved(), after_two)


@pytest.mark.cuda
def test_cuda_engine_on_the_second_gpu(no_fallback):
    """Item 14: capture used torch's process-wide capture stream (made on the device current at the
    first capture) and the current device; an engine on cuda:1 captured nothing or failed."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    plain = make_model()
    with torch.cuda.device(0):
        graphed = Engine(copy.deepcopy(plain), device="cuda:1")
        eager = Engine(copy.deepcopy(plain), device="cuda:1", cuda_graph=False)
        for frame in frames(3, 32, 48):
            assert np.array_equal(graphed.deblur(frame), eager.deblur(frame))
    assert graphed.device == torch.device("cuda", 1) and graphed.cuda_graph and len(graphed._graphs) == 1
    with torch.cuda.device(1):
        assert Engine(make_model(), device="cuda").device == torch.device("cuda", 1)


@pytest.mark.cuda
def test_cuda_graph_captured_inside_a_user_stream(no_fallback):
    plain = make_model()
    graphed = Engine(copy.deepcopy(plain), device="cuda")
    eager = Engine(copy.deepcopy(plain), device="cuda", cuda_graph=False)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        for frame in frames(3, 32, 48):
            assert np.array_equal(graphed.deblur(frame), eager.deblur(frame))
    assert graphed.cuda_graph and len(graphed._graphs) == 1
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


class HostDataPerCall(nn.Module):
    """Copies host data to the device in every forward: illegal during stream capture."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x) * torch.tensor([0.5], device=x.device)


@pytest.mark.cuda
def test_cuda_failed_capture_falls_back_to_eager_and_says_so():
    """Item 13: if capture raises for a model, the engine warns and runs eagerly, correctly."""
    torch.manual_seed(0)
    net = HostDataPerCall()
    net.io = IO
    plain = copy.deepcopy(net)
    engine = Engine(net, device="cuda")
    x = torch.rand(1, 3, 16, 16)
    with pytest.warns(RuntimeWarning, match="capturing HostDataPerCall into a CUDA graph .* failed"):
        y = engine.run(x)
    assert not engine.cuda_graph
    want = Engine(plain, device="cuda", cuda_graph=False).run(x)
    assert torch.equal(y, want) and torch.equal(engine.run(x), want)
    assert torch.equal(engine.run(x[..., :8, :8]), Engine(copy.deepcopy(plain), device="cuda",
                                                          cuda_graph=False).run(x[..., :8, :8]))


@pytest.mark.cuda
def test_cuda_run_results_do_not_alias(no_fallback):
    """Item 17: run() returned the graph's static output buffer, so two calls aliased."""
    engine = Engine(make_model(), device="cuda")
    x1, x2 = torch.rand(1, 3, 16, 24) - 0.5, torch.rand(1, 3, 16, 24) - 0.5
    y1 = engine.run(x1)
    keep = y1.clone()
    y2 = engine.run(x2)
    assert torch.equal(y1, keep) and not torch.equal(y1, y2)
    assert len(engine._graphs) == 1


@pytest.mark.cuda
def test_cuda_stream_iterated_inside_another_stream(no_fallback):
    """Item 18: stream() fixed its compute stream when iteration started, but the frames computed
    on whatever stream was current at each next(); inside another stream's block, the download
    then copied results before they were computed. A slow consumer stream makes that certain."""
    engine = Engine(cached_constants_model(), device="cuda", dtype=torch.float16)
    fs = frames(6, 128, 192)
    want = [engine.deblur(f) for f in fs]
    other = torch.cuda.Stream()
    stream = engine.stream(fs)
    got = [next(stream)]  # starts iteration on the default stream
    with torch.cuda.stream(other):
        for _ in range(len(fs) - 1):
            torch.cuda._sleep(50_000_000)  # the consumer's stream is busy
            got.append(next(stream))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.cuda
def test_cuda_stream_rejects_float_frames():
    """Item 18: float frames were cast to uint8 silently in the pinned buffer."""
    engine = Engine(make_model(), device="cuda")
    with pytest.raises(ValueError, match=r"Engine.stream: frame 1 must be uint8 \(H, W, 3\), got float64"):
        list(engine.stream([frames(1)[0], frames(1)[0] / 255.0]))
