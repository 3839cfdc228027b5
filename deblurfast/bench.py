"""Op benchmarks: every backend of every op against the reference, timed
honestly (shared/specs/benchmarks.md).

Each row: max error of the forward and of the input gradients against the
reference run in float64, whether that is within the tolerance table
(deblurfast.testing), and median forward / forward+backward times. Backends of
one case are timed interleaved in one process; GPU times use CUDA events after
warm-up. A backend that cannot run says why.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import ops
from .dispatch import BACKENDS, OPS
from .testing import check_close, max_abs_error

# Peak HBM bandwidth (bytes/s) and dense fp16/bf16, fp32 FLOP/s (shared/specs/benchmarks.md).
PEAKS = {
    "H100": {"bandwidth": 3.35e12, "fp16": 990e12, "fp32": 67e12},
    "H200": {"bandwidth": 4.8e12, "fp16": 990e12, "fp32": 67e12},
}


@dataclass
class Case:
    op: str  # name in deblurfast.dispatch.OPS
    shape: str  # human-readable shape
    make: Callable[[torch.device, torch.dtype], tuple]  # -> positional arguments of `run`
    run: Callable  # run(*args, backend=...) -> tensor or nested sequence of tensors
    flops: Callable[[tuple], float]


def _deform_case(n, c, h, w, k):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
        return (r(n, c, h, w), 2 * r(n, 2 * k * k, h, w), r(c, c, k, k) / (c * k), r(c),
                1, k // 2, 1, torch.rand(n, k * k, h, w, generator=g).to(device, dtype))

    return Case("deform_conv2d", f"{n}x{c}x{h}x{w} {k}x{k} {c}->{c}", make, ops.deform_conv2d,
                lambda a: 2.0 * n * c * c * k * k * h * w)


def _dynamic_filter_case(n, c, h, w, k):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        return (torch.randn(n, c, h, w, generator=g).to(device, dtype),
                torch.randn(n, k * k, h, w, generator=g).to(device, dtype), k, 1, "reflect", "softmax")

    return Case("dynamic_filter2d", f"{n}x{c}x{h}x{w} {k}x{k} softmax reflect", make, ops.dynamic_filter2d,
                lambda a: 2.0 * n * c * h * w * k * k)


def _attention_case(n, c, c2, h, w):
    def make(device, dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
        return (r(n, c, h, w), r(n, c2, h, w), r(n, c2, h, w), torch.rand(n, c, generator=g).to(device, dtype))

    return Case("efficient_attention", f"{n}x{c}x{h}x{w} C2={c2}", make, ops.efficient_attention,
                lambda a: 4.0 * n * c * c2 * h * w)


def _strip_pool_case(n, c, h, w):
    def make(device, dtype):
        return (torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0)).to(device, dtype), (1, 3, 5, 7))

    return Case("strip_pool", f"{n}x{c}x{h}x{w} sizes 1,3,5,7", make, ops.strip_pool, lambda a: 8.0 * n * c * h * w)


def _strip_expand_case(n, c, h, w, nv, nh):
    def make(device, dtype):
        g = torch.Generator().manual_seed(0)
        return (torch.randn(n, c, h, nv, generator=g).to(device, dtype),
                torch.randn(n, c, nh, w, generator=g).to(device, dtype), (h, w))

    return Case("strip_expand", f"{n}x{c}x{h}x{w} from {nv}, {nh}", make, ops.strip_expand,
                lambda a: 1.0 * n * c * h * w)


def quick_cases(device: torch.device) -> list[Case]:
    """Short correctness-and-speed run: small shapes on CPU, 720p / 64 channels on GPU."""
    if device.type == "cuda":
        return [
            _deform_case(1, 64, 720, 1280, 3),
            _dynamic_filter_case(1, 64, 720, 1280, 3),
            _attention_case(1, 64, 64, 720, 1280),
            _strip_pool_case(1, 64, 720, 1280),
            _strip_expand_case(1, 64, 720, 1280, 7, 7),
        ]
    return [
        _deform_case(1, 16, 48, 64, 3),
        _dynamic_filter_case(1, 32, 128, 128, 3),
        _attention_case(1, 64, 16, 64, 64),
        _strip_pool_case(1, 32, 128, 128),
        _strip_expand_case(1, 32, 128, 128, 7, 7),
    ]


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flatten(item)]


def _differentiable(args: tuple) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]


def _with_grad(args: tuple, dtype=None) -> tuple:
    return tuple(
        (a.detach().to(dtype or a.dtype).requires_grad_(True) if isinstance(a, torch.Tensor) else a) for a in args
    )


def _cotangents(case: Case, args: tuple) -> list[torch.Tensor]:
    """Fixed random cotangents, one per output (the same values whatever the dtype)."""
    with torch.no_grad():
        outs = _flatten(case.run(*args, backend="reference"))
    return [torch.randn(o.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64).to(o)
            for i, o in enumerate(outs)]


def _forward_backward(case: Case, args: tuple, backend: str, cotangents: list[torch.Tensor]):
    """Outputs, and gradients of <outputs, cotangents> w.r.t. every floating-point argument."""
    args = _with_grad(args)
    outs = _flatten(case.run(*args, backend=backend))
    inputs = [args[i] for i in _differentiable(args)]
    grads = torch.autograd.grad(outs, inputs, [c.to(o.dtype) for c, o in zip(cotangents, outs)], allow_unused=True)
    return [o.detach() for o in outs], [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(fns: dict[str, Callable], device: torch.device, reps: int) -> dict[str, list[float]]:
    """Milliseconds per call of each fn, the fns taking turns rep by rep."""
    for fn in fns.values():  # warm-up: compilation, autotuning, caches
        fn()
        fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "commit": commit,
        "threads": torch.get_num_threads(),
    }


def _roofline(device_name: str, dtype: torch.dtype, flops: float, bytes_min: float, ms: float) -> float | None:
    peak = next((p for key, p in PEAKS.items() if key in device_name), None)
    if peak is None or not ms:
        return None
    flop_peak = peak["fp32"] if dtype in (torch.float32, torch.float64) else peak["fp16"]
    floor_s = max(flops / flop_peak, bytes_min / peak["bandwidth"])
    return 100.0 * floor_s / (ms / 1e3)


def run_case(case: Case, device: torch.device, dtype: torch.dtype, reps: int, env: dict) -> list[dict]:
    args = case.make(device, dtype)
    cot = _cotangents(case, args)
    ref_out, ref_grads = _forward_backward(case, _with_grad(args, torch.float64), "reference", cot)
    ref_lowp = None
    if dtype in (torch.float16, torch.bfloat16):  # the tolerance compares with the reference's own error
        ref_lowp = _forward_backward(case, args, "reference", cot)
    op = OPS[case.op]
    rows, runnable = [], {}
    for backend in BACKENDS:
        row = {"op": case.op, "shape": case.shape, "dtype": str(dtype).replace("torch.", ""), "layout": "NCHW",
               "backend": backend, **env}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        why = op.refusal(backend, device, dtype, *args) if backend in op.impls else f"not implemented for {case.op}"
        if why is not None:
            row["status"] = why
            rows.append(row)
            continue
        try:
            outs, grads = _forward_backward(case, args, backend, cot)
        except Exception as e:  # report and go on: one broken backend must not hide the others
            row["status"] = f"error: {type(e).__name__}: {e}"
            rows.append(row)
            continue
        fails = []
        for i, (o, r) in enumerate(zip(outs + grads, ref_out + ref_grads)):
            lowp = (ref_lowp[0] + ref_lowp[1])[i] if ref_lowp else None
            msg = check_close(o, r, dtype, lowp)
            if msg:
                fails.append(msg)
        row["max_err_fwd"] = max((max_abs_error(o, r) for o, r in zip(outs, ref_out)), default=0.0)
        row["max_err_grad"] = max((max_abs_error(g, r) for g, r in zip(grads, ref_grads)), default=0.0)
        row["status"] = "ok" if not fails else "TOLERANCE EXCEEDED: " + fails[0]
        bytes_min = sum(t.numel() * t.element_size() for t in tensors + outs)
        row["bytes_min"] = bytes_min
        row["flops"] = case.flops(args)
        rows.append(row)

        def fwd(backend=backend):
            with torch.no_grad():
                return case.run(*args, backend=backend)

        def fwd_bwd(backend=backend):
            return _forward_backward(case, args, backend, cot)

        runnable[backend] = (row, fwd, fwd_bwd)
    for key, pick in (("fwd", 1), ("fwd_bwd", 2)):
        times = _time_interleaved({b: v[pick] for b, v in runnable.items()}, device, reps)
        for backend, ts in times.items():
            row = runnable[backend][0]
            row[f"{key}_ms_median"] = statistics.median(ts)
            row[f"{key}_ms_min"] = min(ts)
            row[f"{key}_ms_max"] = max(ts)
            row[f"{key}_reps"] = len(ts)
    for row, _, _ in runnable.values():
        ms = row["fwd_ms_median"]
        row["fwd_gbps"] = row["bytes_min"] / (ms / 1e3) / 1e9 if ms else None
        row["fwd_tflops"] = row["flops"] / (ms / 1e3) / 1e12 if ms else None
        row["fwd_roofline_pct"] = _roofline(env["device"], dtype, row["flops"], row["bytes_min"], ms)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            runnable[row["backend"]][1]()
            _sync(device)
            row["fwd_peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
    return rows


def format_markdown(rows: list[dict]) -> str:
    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [
        "| op | shape | dtype | backend | fwd ms | fwd+bwd ms | GB/s | max err fwd | max err grad | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['backend']} | {num(r.get('fwd_ms_median'), '.3f')} | "
            f"{num(r.get('fwd_bwd_ms_median'), '.3f')} | {num(r.get('fwd_gbps'), '.1f')} | "
            f"{num(r.get('max_err_fwd'), '.2e')} | {num(r.get('max_err_grad'), '.2e')} | {r['status']} |"
        )
    return "\n".join(lines)


def write_atomic(path: str, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(quick: bool, device: str | None, dtypes: list[str] | None, reps: int | None, out_dir: str | None) -> list[dict]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("deblurfast bench: --device cuda but no CUDA device is visible")
    names = dtypes or (["float32", "float16", "bfloat16"] if dev.type == "cuda" else ["float32"])
    reps = reps or (20 if dev.type == "cuda" else 5)
    if not quick:
        raise SystemExit("deblurfast bench: only --quick exists so far (the full sweeps are not written yet)")
    env = environment(dev)
    print(f"deblurfast bench --quick on {env['device']} ({dev.type}), torch {env['torch']}, "
          f"triton {env['triton']}, commit {env['commit']}, {reps} timed runs per backend")
    rows = []
    for case in quick_cases(dev):
        for name in names:
            dtype = getattr(torch, name)
            case_rows = run_case(case, dev, dtype, reps, env)
            for r in case_rows:
                print(f"  {r['op']:<20} {r['dtype']:<9} {r['backend']:<10} "
                      + (f"fwd {r['fwd_ms_median']:9.3f} ms  fwd+bwd {r['fwd_bwd_ms_median']:9.3f} ms  "
                         f"err {r['max_err_fwd']:.1e}/{r['max_err_grad']:.1e}  {r['status']}"
                         if "fwd_ms_median" in r else r["status"]), flush=True)
            rows += case_rows
    table = format_markdown(rows)
    print()
    print(table)
    if out_dir:
        stem = os.path.join(out_dir, f"quick-{dev.type}")
        write_atomic(stem + ".jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_atomic(stem + ".md", table + "\n")
        print(f"\nwrote {stem}.jsonl and {stem}.md")
    return rows
