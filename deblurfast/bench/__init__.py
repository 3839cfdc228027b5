"""`deblurfast bench`: op benchmarks (deblurfast.bench.ops) with honest timing
(deblurfast.bench.core); see shared/specs/benchmarks.md."""

from __future__ import annotations

import os

import torch

from . import ops
from .core import environment, markdown_table, write_results
from .plots import plot_rows


def run_ops(quick: bool, device: str | None = None, dtypes: list[str] | None = None, reps: int | None = None,
            out_dir: str | None = None, compile_peer: bool | None = None, peers: bool = False) -> list[dict]:
    """Benchmarks every op (see deblurfast.bench.ops.cases, or ops.peer_cases with peers=True);
    prints a line per result and a markdown table; writes <out_dir>/ops-{quick,full,peers}-<device>.{jsonl,md}."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("deblurfast bench: --device cuda but no CUDA device is visible")
    names = dtypes or (["float32", "float16", "bfloat16"] if dev.type == "cuda" else ["float32"])
    reps = reps or (20 if dev.type == "cuda" else 5)
    compile_peer = (not quick and not peers) if compile_peer is None else compile_peer
    env = environment(dev)
    suite = "peers" if peers else "quick" if quick else "full"
    print(f"deblurfast bench ({suite}) on {env['device']} ({dev.type}), "
          f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, {reps} timed runs each",
          flush=True)
    rows = []
    stem = f"ops-{suite}-{dev.type}"
    for case in ops.peer_cases() if peers else ops.cases(dev, quick):
        for name in names:
            case_rows = ops.run_case(case, dev, getattr(torch, name), reps, env, compile_peer)
            for r in case_rows:
                fwd_bwd = f"{r['fwd_bwd_ms_median']:9.3f} ms" if "fwd_bwd_ms_median" in r else "        -   "
                timing = (f"fwd {r['fwd_ms_median']:9.3f} ms  fwd+bwd {fwd_bwd}  "
                          f"err {r['max_err_fwd']:.1e}/{r.get('max_err_grad', 0.0):.1e}  " if "fwd_ms_median" in r else "")
                print(f"  {r['op']:<19} {r['shape'][:34]:<34} {r['dtype']:<8} {r['layout'][:5]:<5} "
                      f"{r['backend']:<18} {timing}{r['status']}", flush=True)
            for r in case_rows:
                for key in ("fwd", "fwd_bwd"):
                    if r.get(f"{key}_peak_extra_bytes") is not None:
                        r[f"{key}_peak_mb"] = r[f"{key}_peak_extra_bytes"] / 2**20
            rows += case_rows
            if out_dir:  # so far, so that an interrupted sweep keeps what it measured
                write_results(out_dir, stem, rows, markdown_table(rows, ops.COLUMNS))
    table = markdown_table(rows, ops.COLUMNS)
    print("\n" + table)
    if out_dir:
        paths = write_results(out_dir, stem, rows, table) + plot_rows(rows, out_dir, stem)
        print(f"\nwrote {len(paths)} files to {out_dir}: " + ", ".join(os.path.basename(p) for p in paths[:4])
              + (" ..." if len(paths) > 4 else ""))
    return rows


def run_models(device: str | None = None, names: list[str] | None = None, size: tuple[int, int] | None = None,
               reps: int | None = None, out_dir: str | None = None, compile_peer: bool | None = None) -> list[dict]:
    """End-to-end model benchmarks (deblurfast.bench.models) at 720x1280 on a GPU
    (256x256 on CPU by default); prints them and writes <out_dir>/models-<device>.{jsonl,md}."""
    from . import models as model_bench

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = size or ((720, 1280) if dev.type == "cuda" else (256, 256))
    reps = reps or (20 if dev.type == "cuda" else 5)
    compile_peer = dev.type == "cuda" if compile_peer is None else compile_peer
    env = environment(dev)
    print(f"deblurfast bench --models on {env['device']} ({dev.type}), {size[0]}x{size[1]}, torch {env['torch']}, "
          f"commit {env['commit']}, {reps} timed runs each", flush=True)
    rows = []
    for name in names or model_bench.model_names():
        model_rows = model_bench.run_model(name, dev, size, reps, env, compile_peer)
        for r in model_rows:
            timing = (f"{r['latency_ms_median']:9.2f} ms ({r['fps']:7.1f} fps)  dev {r['max_dev_vs_fp32']:.1e}  "
                      if "latency_ms_median" in r else "")
            print(f"  {r['model']:<16} {r['candidate']:<34} {timing}{r['status']}", flush=True)
        rows += model_rows
        if out_dir:
            write_results(out_dir, f"models-{dev.type}", rows, markdown_table(rows, model_bench.COLUMNS))
    table = markdown_table(rows, model_bench.COLUMNS)
    print("\n" + table)
    if out_dir:
        paths = write_results(out_dir, f"models-{dev.type}", rows, table) + plot_rows(rows, out_dir, f"models-{dev.type}")
        print(f"\nwrote {len(paths)} files to {out_dir}")
    return rows
