"""The engine's CPU path, chosen by measurement.

On a GPU the fused kernels, channels_last and CUDA graphs win by construction; on a CPU
the fastest way to run a network depends on the network. deblurfast's C++ kernels beat
the reference ops, but a network whose time goes to ATen convolutions may run faster in
NCHW than channels_last, and inductor's CPU code (torch.compile with frozen weights)
pays only for some networks, after a compile of tens of seconds. So the engine times
the candidate paths on a proxy of the first input (a corner crop of at most PROXY_SIDE
pixels a side) and keeps the fastest; the timings stay on the engine (`cpu_timings`).
A choice is remembered per (model, dtype, threads) for the process, so engines built
again for the same model do not measure again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..models.registry import IOConvention
from .accelerate import accelerate

PROXY_SIDE = 256  # large enough that per-op overheads do not decide, small enough to time in seconds
REPEATS = 2  # timed runs per path (the fastest counts), after one warm-up run


@dataclass(frozen=True)
class CpuPath:
    """One way to run a network on the CPU.

    backend: the deblurfast layers' backend: "auto" (the C++ kernels) or "reference"
        (the reference ops, plain PyTorch).
    channels_last: activations and weights in channels_last.
    compiled: torch.compile (inductor's CPU backend) with frozen weights.
    """

    backend: str = "auto"
    channels_last: bool = False
    compiled: bool = False

    def __str__(self) -> str:
        parts = ["kernels" if self.backend == "auto" else self.backend,
                 "channels_last" if self.channels_last else "NCHW"]
        return " + ".join(parts + (["compiled"] if self.compiled else []))


def candidates(backend: str = "auto", channels_last: bool | None = None, compile: bool = False) -> list[CpuPath]:
    """The paths that may be measured: with backend "auto", the kernels and the reference ops (else
    that backend only); each in NCHW and channels_last (or as `channels_last` says); with compile,
    each of those compiled too, of which choose() measures only the fastest plain path's (each
    compile costs about a minute). The first is the one to run before measuring."""
    backends = ("auto", "reference") if backend == "auto" else (backend,)
    layouts = (False, True) if channels_last is None else (channels_last,)
    plain = [CpuPath(b, cl) for b in backends for cl in layouts]
    return plain + ([CpuPath(p.backend, p.channels_last, True) for p in plain] if compile else [])


def configure(model: nn.Module, path: CpuPath) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sets `model` (in place) to `path` and returns the function that runs it."""
    accelerate(model, backend=path.backend, channels_last=path.channels_last)
    return frozen(torch.compile(model, mode="max-autotune-no-cudagraphs")) if path.compiled else model


def frozen(compiled: Callable) -> Callable:
    """A torch.compiled callable run with inductor's weight freezing (CPU inference): the weights are
    folded into the graph as constants, so convolution weights are prepacked once."""
    def run(*args):
        with torch._inductor.config.patch(freezing=True):
            return compiled(*args)

    return run


def proxy(x: torch.Tensor, io: IOConvention) -> torch.Tensor:
    """x's top-left corner, at most PROXY_SIDE a side, still a size the model runs."""
    side = max(io.padded_size(1), PROXY_SIDE // io.multiple * io.multiple)
    return x[..., :min(x.shape[-2], side), :min(x.shape[-1], side)].contiguous()


def time_path(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, prepare: Callable,
              repeats: int = REPEATS, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of forward(prepare(x)): the fastest of `repeats` runs (noise from other work
    only adds time), after one warm-up run (compilation, allocations)."""
    with torch.no_grad():
        forward(prepare(x))
        times = []
        for _ in range(repeats):
            start = clock()
            forward(prepare(x))
            times.append(clock() - start)
    return min(times)


_CHOSEN: dict[tuple, CpuPath] = {}  # (model key, dtype, threads, paths) -> fastest path


def measure_path(path: CpuPath, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Seconds of the model set to `path` (run by `forward`) on x."""
    return time_path(forward, x, _preparer(path))


def choose(model: nn.Module, x: torch.Tensor, io: IOConvention,
           paths: list[CpuPath]) -> tuple[CpuPath, Callable, dict[CpuPath, float]]:
    """Times the paths in `paths` on x's proxy and sets `model` to the fastest: returns (that
    path, the function that runs the model, {path: seconds}; empty if the choice was remembered
    from an earlier engine of the same model). Of the compiled paths only the fastest plain
    path's compiled twin is timed (when `paths` has it): inductor keeps the layout and backend
    it is given, and a compile costs far more than a plain timing."""
    x = proxy(x, io)
    key = (_model_key(model), x.dtype, torch.get_num_threads(), tuple(paths))
    timings: dict[CpuPath, float] = {}
    if key not in _CHOSEN:
        plain = [p for p in paths if not p.compiled]
        for path in plain:
            timings[path] = measure_path(path, configure(model, path), x)
        twins = [p for p in paths if p.compiled]
        if plain:
            fastest = min(timings, key=timings.get)
            twins = [p for p in twins if (p.backend, p.channels_last) == (fastest.backend, fastest.channels_last)]
        for path in twins:
            timings[path] = measure_path(path, configure(model, path), x)
        _CHOSEN[key] = min(timings, key=timings.get)
    best = _CHOSEN[key]
    return best, configure(model, best), timings


def _preparer(path: CpuPath) -> Callable[[torch.Tensor], torch.Tensor]:
    if path.channels_last:
        return lambda x: x.contiguous(memory_format=torch.channels_last)
    return lambda x: x.contiguous()


def _model_key(model: nn.Module) -> tuple:
    """What makes two models time alike: their class, name and parameter shapes."""
    shapes = tuple((name, tuple(p.shape), p.dtype) for name, p in model.named_parameters())
    return type(model).__qualname__, getattr(model, "model_name", None), shapes
