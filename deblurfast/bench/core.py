"""Honest timing and the bookkeeping every benchmark row carries
(shared/specs/benchmarks.md): synchronized GPU timing with CUDA events after
warm-up, candidates interleaved in one process, wall clock on CPU, peak memory,
roofline, environment, atomic result files."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import threading
import time
from typing import Callable

import torch

from .._files import write_text

# Peak HBM bandwidth (bytes/s) and dense fp16/bf16 and fp32 FLOP/s (shared/specs/benchmarks.md).
PEAKS = {
    "H100": {"bandwidth": 3.35e12, "fp16": 990e12, "fp32": 67e12},
    "H200": {"bandwidth": 4.8e12, "fp16": 990e12, "fp32": 67e12},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable], device: torch.device, reps: int, warmup: int = 2) -> dict:
    """Milliseconds per call of each fn, the fns taking turns run by run (so drifting
    clocks or a busy neighbour affect all alike). GPU: CUDA events, synchronized."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
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


def summarize(ts: list[float], prefix: str) -> dict:
    ordered = sorted(ts)
    return {
        f"{prefix}_ms_median": statistics.median(ordered),
        f"{prefix}_ms_min": ordered[0],
        f"{prefix}_ms_p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        f"{prefix}_ms_max": ordered[-1],
        f"{prefix}_reps": len(ordered),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn: Callable, device: torch.device) -> tuple[int | None, str]:
    """Peak memory fn allocates beyond what is allocated before it runs, and how it was
    measured. CUDA: the caching allocator's peak. CPU: resident set size sampled
    every millisecond (Linux), a close lower bound."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda allocator peak"
    if not os.path.exists("/proc/self/statm"):
        return None, "not measured"
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return max(0, peak[0] - base), "sampled RSS"


def roofline_percent(device_name: str, dtype: torch.dtype, flops: float, bytes_min: float, ms: float) -> float | None:
    """100 * physical floor / measured time, floor = max(FLOPs / peak FLOP/s, bytes_min / bandwidth)."""
    peak = next((p for key, p in PEAKS.items() if key in device_name), None)
    if peak is None or not ms:
        return None
    flop_peak = peak["fp32"] if dtype in (torch.float32, torch.float64) else peak["fp16"]
    return 100.0 * max(flops / flop_peak, bytes_min / peak["bandwidth"]) / (ms / 1e3)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "commit": git_commit(),
        "cpu_threads": torch.get_num_threads(),
    }


def write_results(out_dir: str, stem: str, rows: list[dict], table: str) -> list[str]:
    paths = [os.path.join(out_dir, f"{stem}.jsonl"), os.path.join(out_dir, f"{stem}.md")]
    write_text(paths[0], "".join(json.dumps(r) + "\n" for r in rows))
    write_text(paths[1], table + "\n")
    return paths


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (header, key, format spec); missing values print as '-'."""

    def cell(row, key, spec):
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return format(v, spec) if spec else str(v)

    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---:" if spec else "---" for _, _, spec in columns) + "|"]
    lines += ["| " + " | ".join(cell(r, k, s) for _, k, s in columns) + " |" for r in rows]
    return "\n".join(lines)


def onnxruntime_session_options():
    """onnxruntime's options for a timing beside other candidates: torch's thread count, and no
    spinning (by default its idle threads spin after each run, taking the cores from whatever
    candidate is timed next)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
