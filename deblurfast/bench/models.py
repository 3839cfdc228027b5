"""End-to-end model benchmarks (shared/specs/benchmarks.md, "models"): every
network on a 720x1280 frame, batch 1, run the ways users run it —

- eager fp32 reference (what the authors ran),
- eager fp16 / bf16 with channels_last,
- torch.compile(mode="max-autotune") of the reference,
- the deblurfast engine (fused kernels, channels_last, 16-bit, CUDA graphs),
- onnxruntime on the network exported by deblurfast.export (CPU provider; the CUDA
  provider on a GPU when installed),

with median / p90 latency, frames per second, peak memory and the largest
deviation from the fp32 reference output (in [0, 1] image units); for the
engine also the frames per second of a stream of uint8 host frames
(`Engine.stream`, what `deblurfast deblur` runs on a video) and its ratio to
the single-frame rate. Weights are
random (a fixed seed): speed does not depend on them, and every candidate runs
the same weights. On CPU the frame is smaller, the 16-bit candidates are left
out (they are GPU paths) and torch.compile runs inductor's C++ backend with
frozen weights (its compile time is not timed: the first call is a warm-up).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from typing import Callable

import numpy as np
import torch

from ..engine import Engine
from ..engine.cpu_path import frozen
from ..models import create, model_entry
from .core import onnxruntime_session_options, peak_extra_memory, summarize, sync, time_interleaved


def _input(model, h: int, w: int, device) -> torch.Tensor:
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    x, _ = model.io.pad(model.io.to_model(x))
    return x.to(device)


def _call(model) -> Callable:
    entry = model_entry(model.model_name)
    return lambda x: entry.call(model, x)


def onnxruntime_runner(model, device: torch.device) -> tuple[Callable, str] | None:
    """fn(x) running `model` exported by deblurfast.export in onnxruntime (the CUDA provider for a
    CUDA device when installed, else the CPU one) and the provider's name; None without
    onnxruntime or for a GPU without its CUDA provider. Host copies of x and of the output are
    part of each call (what a user feeding torch tensors does)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from ..export import to_onnx

    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return None
    io = model.io
    side = -(-max(32, io.min_size) // io.multiple) * io.multiple
    with tempfile.TemporaryDirectory(prefix="deblurfast-bench-") as folder:
        path = to_onnx(model, os.path.join(folder, f"{model.model_name}.onnx"), height=side, width=side)
        session = ort.InferenceSession(path, onnxruntime_session_options(), providers=[provider])

    def run(x):
        (y,) = session.run(None, {"image": x.cpu().numpy()})
        return torch.from_numpy(y).to(x.device)

    return run, provider


def candidates(name: str, device: torch.device, include_compile: bool) -> dict[str, Callable]:
    """name -> fn(x) returning the output image in [0, 1] for the padded fp32 input x."""
    torch.manual_seed(0)
    reference = create(name).eval().requires_grad_(False).to(device)
    io = reference.io
    out = {"eager fp32 (reference)": lambda x: io.from_model(_call(reference)(x))}
    if device.type == "cuda":
        for dtype in (torch.float16, torch.bfloat16):
            m = copy.deepcopy(reference).to(dtype).to(memory_format=torch.channels_last)
            tag = str(dtype).replace("torch.", "")
            out[f"eager {tag} channels_last"] = (
                lambda x, m=m, dt=dtype: io.from_model(_call(m)(x.to(dt).contiguous(memory_format=torch.channels_last))))
        engines = {str(dt).replace("torch.", ""): Engine(copy.deepcopy(reference), device=device, dtype=dt)
                   for dt in (torch.float16, torch.bfloat16)}
    else:
        engines = {"fp32": Engine(copy.deepcopy(reference), device=device, dtype=None)}
        if include_compile:  # also measures the fastest plain path compiled (one inductor compile)
            engines["fp32 compile=True"] = Engine(copy.deepcopy(reference), device=device, dtype=None, compile=True)
    if include_compile:
        compiled = _call(torch.compile(copy.deepcopy(reference), mode="max-autotune"))
        if device.type != "cuda":  # inductor's C++ backend with frozen weights, as a CPU deployment runs it
            compiled = frozen(compiled)
        out["compile max-autotune (reference)"] = lambda x: io.from_model(compiled(x))
    if model_entry(name).inputs == 1:  # a reblurring net's pair is not exported (docs/export.md)
        runner = onnxruntime_runner(reference, device)
        if runner is not None:
            fn, provider = runner
            tag = "" if provider == "CPUExecutionProvider" else f" {provider}"
            main_image = dataclasses.replace(io, output=None)  # the graph's output is the main image
            out[f"onnxruntime (exported){tag}"] = lambda x, f=fn: main_image.from_model(f(x))
    for tag, engine in engines.items():
        if model_entry(name).inputs > 1:  # the engine runs single-image models: time its accelerated model
            out[f"deblurfast engine {tag}"] = lambda x, e=engine: io.from_model(_call(e.model)(x.to(e.dtype)))
        else:
            fn = out[f"deblurfast engine {tag}"] = lambda x, e=engine: e.run(x)
            fn.engine = engine  # also timed on a stream of frames
    return out


def stream_fps(engine: Engine, size: tuple[int, int], frames: int) -> float:
    """Frames per second of `engine.stream` over uint8 host frames of `size`: uploads, compute and
    downloads overlapped, every frame handed back to the host (what `deblurfast deblur` does with a video)."""
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(2)]
    for _ in engine.stream(clips):  # warm-up: pinned buffers, CUDA graph capture
        pass
    sync(engine.device)
    start = time.perf_counter()
    n = sum(1 for _ in engine.stream(clips[i % 2] for i in range(frames)))
    sync(engine.device)
    return n / (time.perf_counter() - start)


def run_model(name: str, device: torch.device, size: tuple[int, int], reps: int, env: dict,
              include_compile: bool) -> list[dict]:
    cands = candidates(name, device, include_compile)
    x = _input(create(name), *size, device)
    with torch.no_grad():
        ref = cands["eager fp32 (reference)"](x).float()
    rows, timed = [], {}
    for cand, fn in cands.items():
        row = {"model": name, "size": f"{size[0]}x{size[1]}", "candidate": cand, **env}
        rows.append(row)
        try:
            with torch.no_grad():
                y = fn(x).float()
            row["max_dev_vs_fp32"] = (y - ref).abs().max().item()
            row["status"] = "ok"
            timed[cand] = (row, fn)
        except Exception as e:  # report and go on
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    with torch.no_grad():
        times = time_interleaved({c: (lambda f=fn: f(x)) for c, (_, fn) in timed.items()}, device, reps, warmup=3)
        for cand, ts in times.items():
            row = timed[cand][0]
            row.update(summarize(ts, "latency"))
            row["fps"] = 1e3 / row["latency_ms_median"]
            row["peak_extra_bytes"], row["memory_measured_by"] = peak_extra_memory(lambda: timed[cand][1](x), device)
            row["peak_mb"] = row["peak_extra_bytes"] / 2**20 if row["peak_extra_bytes"] is not None else None
        for cand, (row, fn) in timed.items():
            engine = getattr(fn, "engine", None)
            if engine is not None and engine.cpu_path is not None:  # the path it measured fastest, and why
                row["cpu_path"] = str(engine.cpu_path)
                row["cpu_path_ms"] = {str(p): 1e3 * s for p, s in engine.cpu_timings.items()}
            if engine is not None:
                row["stream_fps"] = stream_fps(fn.engine, size, frames=max(reps, 5))
                row["stream_vs_single"] = row["stream_fps"] / row["fps"]
    sync(device)
    return rows


COLUMNS = [
    ("model", "model", ""), ("size", "size", ""), ("candidate", "candidate", ""),
    ("median ms", "latency_ms_median", ".2f"), ("p90 ms", "latency_ms_p90", ".2f"), ("fps", "fps", ".1f"),
    ("stream fps", "stream_fps", ".1f"), ("stream / single", "stream_vs_single", ".2f"),
    ("peak extra MB", "peak_mb", ".0f"), ("max dev vs fp32", "max_dev_vs_fp32", ".1e"),
    ("CPU path (measured)", "cpu_path", ""), ("status", "status", ""),
]
