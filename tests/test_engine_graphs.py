"""The engine's CUDA-graph logic on CPU, under a stand-in for graph capture (fake_cuda_graph):
what every model's forward needs from the host, the cached device constants a graph reads by
address, the bounded graph cache, the fallback to eager execution, results that do not alias, the
indexed device, and stream()'s frame checks. The same behaviours on a GPU: test_engine.py and
test_models_gpu.py (`cuda` marker)."""

import ast
import gc
import pathlib
import warnings
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast._device_constants import clear_device_constant_caches, kept_alive
from deblurfast.engine import Engine, indexed_device
from deblurfast.models import IOConvention, create, list_models
from deblurfast.nn import BlurAwareAttention, DeformConv2d
from fake_cuda_graph import CaptureError, FreedMemoryRead, fake_cuda, graphed
from helpers import require_backend

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = pathlib.Path(__file__).resolve().parents[1]
IO = IOConvention(channel_order="BGR", value_range=(-0.5, 0.5), multiple=8, pad_mode="reflect", clamp=True)
MODELS = list_models()


class Net(nn.Module):
    """A deblurfast layer (DCN), BANet's blur-aware block (cached index maps) and a residual."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.dcn = DeformConv2d(8, 8, 3, padding=1)
        self.ba = BlurAwareAttention(8)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return x + 0.1 * self.tail(torch.relu(self.ba(self.dcn(self.head(x), None))))


def make_engine(**kw):
    torch.manual_seed(0)
    net = Net()
    net.io = IO
    return Engine(net, device="cpu", **kw)


def batch(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) - 0.5


@pytest.fixture
def calls(monkeypatch):
    return fake_cuda(monkeypatch)


@pytest.fixture
def no_warnings():
    """A fall-back to eager execution fails the test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Engine: capturing")
        yield


def eager(engine, x):
    with torch.no_grad():
        return engine._forward_image(engine._prepare_input(x))


def test_replay_recomputes_from_the_static_input(calls, no_warnings):
    """The stand-in itself: the engine captures once per shape and replays what it captured."""
    engine = graphed(make_engine())
    for seed in range(3):
        x = batch(16, 24, seed)
        assert torch.equal(engine.run(x), eager(engine, x))
    (graph,) = engine._graphs.values()
    assert len(calls.captures) == 1 and graph.graph.replays == 3


def test_capture_uses_the_engines_stream_and_one_pool(calls, no_warnings):
    """Issue 12 items 14-15: every capture on the engine's own stream (not torch's process-wide
    capture stream, created on whichever device was current first) and into one shared pool."""
    engine = graphed(make_engine())
    for h in (16, 24, 32):
        engine.run(batch(h, 16))
    assert len(calls.captures) == 3
    assert all(s is engine._capture_stream and p is engine._graph_pool for s, p in calls.captures)
    assert engine._capture_stream is not None and engine._graph_pool is not None


def test_graphs_are_a_bounded_lru(calls, no_warnings):
    """Issue 12 item 15: at most max_graphs captured sizes, least recently used dropped first,
    and dropped for good (nothing keeps their buffers alive), after a device synchronize."""
    engine = graphed(make_engine(max_graphs=2))
    a, b, c = batch(16, 16), batch(24, 16), batch(32, 16)
    engine.run(a)
    first = weakref.ref(engine._graphs[tuple(a.shape)])
    engine.run(b)
    engine.run(a)  # a is now the most recent
    assert calls.synchronized == 0 and len(calls.captures) == 2
    engine.run(c)  # drops b
    assert list(engine._graphs) == [tuple(a.shape), tuple(c.shape)] and calls.synchronized == 1
    engine.run(b)  # captured again, drops a
    assert list(engine._graphs) == [tuple(c.shape), tuple(b.shape)] and len(calls.captures) == 4
    gc.collect()
    assert first() is None
    for x in (a, b, c):
        assert torch.equal(engine.run(x), eager(engine, x))
    with pytest.raises(ValueError, match="max_graphs must be an int >= 1, got 0"):
        make_engine(max_graphs=0)


def test_run_returns_a_tensor_of_its_own(calls, no_warnings):
    """Issue 12 item 17: two calls at one size do not alias (the graph's buffer stays inside)."""
    engine = graphed(make_engine())
    x1, x2 = batch(16, 24, 1), batch(16, 24, 2)
    y1 = engine.run(x1)
    y2 = engine.run(x2)
    assert torch.equal(y1, eager(engine, x1)) and torch.equal(y2, eager(engine, x2))
    (graph,) = engine._graphs.values()
    assert y2.data_ptr() != graph.static_out.data_ptr()


def test_deblur_leaves_the_graph_output_buffer_alone(calls, no_warnings):
    """Issue 12 item 17: converting to uint8 used to clamp and scale the graph's buffer in place."""
    engine = graphed(make_engine())
    frame = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    out = engine.deblur(frame)
    (graph,) = engine._graphs.values()
    x, _ = engine._to_model(torch.from_numpy(frame)[None])
    want = eager(engine, x)
    assert torch.equal(graph.static_out, want)  # still in [0, 1], not scaled to 255
    assert np.array_equal(out, make_engine().deblur(frame))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_captures_and_replays_after_the_constant_caches_evict(name, calls, no_warnings):
    """Issue 12 items 13 and 16, for every model: its forward makes no tensor from host data while
    captured (attentive_msnet built its resize indices in numpy per call), and a replay after every
    device constant cache has let go of its tensors still finds them (the graph holds them)."""
    torch.manual_seed(0)
    model = create(name)
    if name == "aspdc_reblur":  # (blurred, sharp) -> blurred: run as an image-to-image net
        net, model = model, nn.Module()
        model.net, model.io = net, net.io
        model.forward = lambda x: model.net(x, x)
    engine = graphed(Engine(model, device="cpu"))
    m = engine.io.multiple
    x = batch(2 * m if m >= 16 else 24, 3 * m if m >= 16 else 40)
    first = engine.run(x)
    assert engine.cuda_graph and len(engine._graphs) == 1
    clear_device_constant_caches()
    gc.collect()
    again = engine.run(x)
    assert torch.equal(again, first) and torch.equal(again, eager(engine, x))


class HostDataPerCall(nn.Module):
    """Makes a tensor from host data in every forward (as attentive_msnet did)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x) * torch.tensor([0.5])


def test_a_failed_capture_falls_back_to_eager_and_says_so(calls):
    """Issue 12 item 13: if capture raises, warn and run eagerly (from then on)."""
    torch.manual_seed(0)
    net = HostDataPerCall()
    net.io = IO
    engine = graphed(Engine(net, device="cpu"))
    x = batch(16, 16)
    with pytest.warns(RuntimeWarning, match=r"capturing HostDataPerCall into a CUDA graph at input \(1, 3, 16, 16\) "
                                            r"failed \(CaptureError: .*host data.*\); this engine runs eagerly"):
        y = engine.run(x)
    assert torch.equal(y, eager(engine, x))
    assert not engine.cuda_graph and not engine._graphs
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Engine: capturing")
        assert torch.equal(engine.run(batch(24, 16)), eager(engine, batch(24, 16)))
    assert len(calls.captures) == 1


def test_an_error_of_the_model_is_raised_not_taken_for_a_capture_failure(calls, no_warnings):
    engine = graphed(make_engine())
    with pytest.raises(RuntimeError, match="channels"):
        engine.run(torch.zeros(1, 4, 16, 16))
    assert engine.cuda_graph and not calls.captures


def test_the_stand_in_catches_what_a_capture_refuses(calls):
    """The stand-in would fail the code the engine had: host data in the forward, constants freed."""
    from fake_cuda_graph import FakeGraph

    graph = FakeGraph()
    with pytest.raises(CaptureError, match="host data"):
        with torch.cuda.graph(graph):
            torch.ones(3) + torch.from_numpy(np.ones(3, dtype=np.float32))
    constant = torch.arange(4.0)
    graph = FakeGraph()
    with torch.cuda.graph(graph):
        out = constant * 2
    constant.fill_(1)
    graph.replay()
    assert out.tolist() == [2, 2, 2, 2]  # read by address: the constant's new contents
    del constant
    gc.collect()
    with pytest.raises(FreedMemoryRead):
        graph.replay()


@pytest.mark.parametrize("op", ["deform_conv2d", "strip_expand"])
def test_kernel_caches_are_kept_alive_by_a_capture(op):
    """Issue 12 item 16: the Triton launchers' cached device tensors (channel segments, nearest
    indices) are recorded by kept_alive(), which the engine holds with each graph."""
    require_backend(op, "triton", "cpu")
    if op == "deform_conv2d":
        from deblurfast.kernels import deform_conv2d as kernels

        x, w = torch.rand(1, 4, 6, 6), torch.rand(4, 4, 3, 3)
        with kept_alive() as kept:
            deblurfast.deform_conv2d(x, torch.zeros(1, 18, 6, 6), w, padding=1, backend="triton")
        cfg = kernels._config(4, 4)
        cached = kernels._segments(4, 1, 1, cfg["BLOCK_C"], str(x.device))
    else:
        from deblurfast.kernels import strip_pool as kernels

        v, h = torch.rand(1, 2, 10, 3), torch.rand(1, 2, 5, 12)
        with kept_alive() as kept:
            deblurfast.strip_expand(v, h, (10, 12), backend="triton")
        cached = kernels.nearest_index(12, 3, v.device)
    assert any(value is cached for value in kept.values())


def test_every_cache_of_device_tensors_is_a_device_constant_cache():
    """Issue 12 item 16: a plain lru_cache of device tensors would free them on eviction under a
    graph that reads them by address. Caches of anything else are listed here."""
    no_tensors = {("kernels/strip_pool.py", "_num_sms"),  # an int per device
                  ("deblurfast/bench/static.py", "cuobjdump")}  # a path
    found = set()
    for path in sorted((ROOT / "deblurfast").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.decorator_list:
                    target = d.func if isinstance(d, ast.Call) else d
                    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                    if name in ("lru_cache", "cache"):
                        found.add((path.relative_to(ROOT).as_posix(), node.name))
    assert found == no_tensors, (
        f"plain functools caches: {sorted(found - no_tensors)}; use deblurfast._device_constants."
        "device_constant_cache for device tensors (CUDA graphs read them by address)")


def test_cuda_device_is_stored_with_its_index(monkeypatch):
    """Issue 12 item 14: "cuda" becomes the device current at construction, kept from then on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert indexed_device("cuda") == torch.device("cuda", 1)
    assert indexed_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert indexed_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"a visible CUDA device \(cuda:0 to cuda:1\), got cuda:2"):
        indexed_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        indexed_device("cuda")


def test_stream_checks_every_frame():
    """Issue 12 item 18: frames are checked as Engine.deblur checks images, on every device (on a
    GPU, float frames were cast to uint8 silently)."""
    engine = make_engine()
    good = np.zeros((16, 16, 3), dtype=np.uint8)
    must = r"frame 1 must be uint8 \(H, W, 3\), at least 1x1, got "
    cases = [
        (np.zeros((16, 16, 3), dtype=np.float32), must + r"float32 \(16, 16, 3\)"),
        (np.zeros((1, 16, 16, 3), dtype=np.uint8), must + r"uint8 \(1, 16, 16, 3\)"),
        (np.zeros((16, 16, 4), dtype=np.uint8), must + r"uint8 \(16, 16, 4\)"),
        (np.zeros((16, 24, 3), dtype=np.uint8), r"all frames must have one size, got frame 1 \(16, 24, 3\) after "
                                                r"\(16, 16, 3\)"),
    ]
    for bad, message in cases:
        stream = engine.stream([good, bad])
        assert next(stream).shape == good.shape
        with pytest.raises(ValueError, match="Engine.stream: " + message):
            next(stream)
