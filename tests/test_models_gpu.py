"""The eight networks on a GPU (`cuda` marker; skipped without one): a 720x1280 frame at paper
size through the engine, and the engine's 16-bit output against the float32 reference within the
tolerance table (error <= 2x that of the reference path run in the same dtype, ops.md)."""

import copy
import warnings

import pytest
import torch

from deblurfast.engine import Engine
from deblurfast.models import create, list_models
from deblurfast.testing import assert_close

pytestmark = pytest.mark.cuda
MODELS = [n for n in list_models() if not n.startswith("_")]


def frame(model, h, w, seed=0, device="cuda"):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    x, _ = model.io.pad(model.io.to_model(x))
    return x.to(device)


def through(engine, x):
    """The engine's output image in [0, 1] (the reblurring net takes (blurred, sharp): x twice)."""
    if engine.model.model_name == "aspdc_reblur":
        xd = x.to(engine.dtype or x.dtype)
        return engine.model.io.from_model(engine.model(xd, xd))
    return engine.run(x)


@pytest.mark.parametrize("name", MODELS)
def test_720p_frame_at_paper_size(name):
    torch.manual_seed(0)
    engine = Engine(create(name), device="cuda", dtype=torch.float16)
    x = frame(engine.model, 720, 1280)
    with torch.no_grad():
        y = through(engine, x)
    assert y.shape[-2:] == x.shape[-2:] and torch.isfinite(y).all()


@pytest.fixture
def no_tf32():
    """The float32 reference in true float32 (TF32 would make it the less exact side)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", MODELS)
def test_engine_16bit_matches_the_float32_reference(name, dtype, no_tf32):
    torch.manual_seed(1)
    model = create(name).cuda().eval()
    x = frame(model, 128, 192, seed=2)
    with torch.no_grad():
        want = through(Engine(copy.deepcopy(model), device="cuda", dtype=None, backend="reference",
                              cuda_graph=False), x).float()
        own = through(Engine(copy.deepcopy(model), device="cuda", dtype=dtype, backend="reference",
                             cuda_graph=False), x).float()
        got = through(Engine(copy.deepcopy(model), device="cuda", dtype=dtype), x).float()
    assert_close(got.cpu(), want.cpu(), dtype, ref_lowp=own.cpu(), what=f"{name} {dtype}")


@pytest.mark.parametrize("name", [n for n in MODELS if n != "aspdc_reblur"])  # the engine runs image nets
def test_cuda_graph_of_every_model_equals_eager(name):
    """Issue 12 item 13: every model captures into a CUDA graph (attentive_msnet copied its resize
    indices from the host in every forward, illegal during capture), and the replay computes what
    the eager model computes."""
    torch.manual_seed(0)
    model = create(name)
    x = frame(model, 128, 192, seed=3)
    eager = Engine(copy.deepcopy(model), device="cuda", cuda_graph=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Engine: capturing")  # no fall-back to eager
        graphed = Engine(model, device="cuda")
        first = graphed.run(x)
        again = graphed.run(x)
    assert graphed.cuda_graph and len(graphed._graphs) == 1
    assert torch.equal(first, again)
    assert_close(first.cpu(), eager.run(x).cpu(), torch.float32, what=name)
