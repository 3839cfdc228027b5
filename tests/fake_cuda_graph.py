"""CUDA graph capture on CPU, for testing the engine's graph logic without a GPU.

`fake_cuda(monkeypatch)` replaces torch.cuda's CUDAGraph, graph, Stream, current_stream, stream,
synchronize and graph_pool_handle with stand-ins, and `graphed(engine)` turns on graphs for an
engine built on the CPU, so the engine's own warm-up / capture / replay / eviction code runs.

The stand-in graph is faithful in the two ways that break real captures:
- a tensor made from host data during the capture (torch.tensor, torch.from_numpy, ...) fails the
  capture with CaptureError, as the blocking host-to-device copy it needs does on a GPU;
- the graph reads every tensor that existed before the capture (weights, the static input, cached
  device constants) by address, without keeping it alive: a replay after such a tensor was freed
  raises FreedMemoryRead, where a GPU would read whatever reuses the memory.
Tensors made inside the capture live in the graph's pool (held by the graph). Replay re-runs the
recorded aten ops on the recorded tensors: it computes with what those tensors hold now, as a
real replay does. A custom op is recorded as one op; what it does inside is not seen.
"""

from __future__ import annotations

import contextlib
import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten


class CaptureError(RuntimeError):
    """An operation that a CUDA stream capture refuses."""


class FreedMemoryRead(RuntimeError):
    """A replay that would read memory freed since the capture."""


def live_tensors() -> list[torch.Tensor]:
    # type(), not isinstance: some module-level objects warn when their __class__ is read
    return [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph (see the module docstring)."""

    def __init__(self):
        self.ops = []  # (op, pytree spec, leaf tokens, output tokens)
        self.pool: dict[int, torch.Tensor] = {}  # made during the capture, not aliasing older memory
        self.outside: dict[int, weakref.ref] = {}  # older than the capture: by address only
        self.replays = 0

    def replay(self) -> None:
        env = dict(self.pool)

        def value(token):
            kind, key = token
            if kind == "value":
                return key
            if kind == "outside":
                t = self.outside[key]()
                if t is None:
                    raise FreedMemoryRead("the graph reads a tensor freed since the capture")
                return t
            return env[key]

        for op, spec, tokens, outs in self.ops:
            args, kwargs = tree_unflatten([value(t) for t in tokens], spec)
            results, _ = tree_flatten(op(*args, **kwargs))
            for token, r in zip(outs, results):
                if token is None or not isinstance(r, torch.Tensor):
                    continue
                kind, key = token
                if kind == "alias":  # a view or in-place result: derived again at each replay
                    env[key] = r
                elif kind == "pool":
                    target = env[key]
                    if target.data_ptr() != r.data_ptr() or target.stride() != r.stride():
                        target.copy_(r)
        self.replays += 1


class _Capture(TorchDispatchMode):
    def __init__(self, graph: FakeGraph):
        super().__init__()
        self.graph = graph
        self.older = {id(t): t for t in live_tensors()}  # held during the capture: ids stay unique
        self.aliases: dict[int, torch.Tensor] = {}  # views made during the capture, held until its end

    def token(self, t: torch.Tensor):
        key = id(t)
        if key in self.graph.pool:
            return ("pool", key)
        if key in self.aliases:
            return ("alias", key)
        if key in self.older:
            self.graph.outside[key] = weakref.ref(t)
            return ("outside", key)
        raise CaptureError(f"a tensor made from host data during the capture ({tuple(t.shape)} {t.dtype}): "
                           "its host-to-device copy is illegal while a stream captures")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise CaptureError(f"{func}: a device-to-host read is illegal while a stream captures")
        leaves, spec = tree_flatten((args, kwargs))
        tokens = [self.token(a) if isinstance(a, torch.Tensor) else ("value", a) for a in leaves]
        inputs = {_storage(a) for a in leaves if isinstance(a, torch.Tensor)}
        out = func(*args, **kwargs)
        outs = []
        for r in tree_flatten(out)[0]:
            if not isinstance(r, torch.Tensor):
                outs.append(None)
            elif id(r) in self.older or id(r) in self.graph.pool or id(r) in self.aliases:
                outs.append(None)  # an in-place op returned its argument
            elif func.is_view or _storage(r) in inputs:
                self.aliases[id(r)] = r
                outs.append(("alias", id(r)))
            else:
                self.graph.pool[id(r)] = r
                outs.append(("pool", id(r)))
        self.graph.ops.append((func, spec, tokens, outs))
        return out


class FakeStream:
    def __init__(self, device=None):
        self.device = device

    def wait_stream(self, other) -> None:
        pass


class Calls:
    """What the engine asked of the fake torch.cuda."""

    def __init__(self):
        self.captures = []  # (stream, pool) of each capture
        self.synchronized = 0


def fake_cuda(monkeypatch) -> Calls:
    calls = Calls()

    @contextlib.contextmanager
    def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
        calls.captures.append((stream, pool))
        mode = _Capture(cuda_graph)
        try:
            with mode:
                yield
        finally:
            mode.older.clear()
            mode.aliases.clear()

    def synchronize(device=None):
        calls.synchronized += 1

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream(device))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: ("pool",))
    return calls


def graphed(engine):
    """An engine built on the CPU, with CUDA graphs on (under fake_cuda)."""
    engine.cuda_graph = True
    engine._capture_stream = torch.cuda.Stream(engine.device)
    engine._graph_pool = torch.cuda.graph_pool_handle()
    return engine
