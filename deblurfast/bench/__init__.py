"""`deblurfast bench`: op benchmarks (deblurfast.bench.ops) with honest timing
(deblurfast.bench.core); see shared/specs/benchmarks.md."""

from __future__ import annotations

import torch

from . import ops
from .core import environment, markdown_table, write_results


def run_ops(quick: bool, device: str | None = None, dtypes: list[str] | None = None, reps: int | None = None,
            out_dir: str | None = None, compile_peer: bool | None = None) -> list[dict]:
    """Benchmarks every op (see deblurfast.bench.ops.cases); prints a line per result
    and a markdown table; writes <out_dir>/ops-{quick,full}-<device>.{jsonl,md}."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("deblurfast bench: --device cuda but no CUDA device is visible")
    names = dtypes or (["float32", "float16", "bfloat16"] if dev.type == "cuda" else ["float32"])
    reps = reps or (20 if dev.type == "cuda" else 5)
    compile_peer = (not quick) if compile_peer is None else compile_peer
    env = environment(dev)
    print(f"deblurfast bench ({'quick' if quick else 'full'}) on {env['device']} ({dev.type}), "
          f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, {reps} timed runs each",
          flush=True)
    rows = []
    for case in ops.cases(dev, quick):
        for name in names:
            case_rows = ops.run_case(case, dev, getattr(torch, name), reps, env, compile_peer)
            for r in case_rows:
                timing = (f"fwd {r['fwd_ms_median']:9.3f} ms  fwd+bwd {r['fwd_bwd_ms_median']:9.3f} ms  "
                          f"err {r['max_err_fwd']:.1e}/{r['max_err_grad']:.1e}  " if "fwd_ms_median" in r else "")
                print(f"  {r['op']:<19} {r['shape'][:34]:<34} {r['dtype']:<8} {r['layout'][:5]:<5} "
                      f"{r['backend']:<18} {timing}{r['status']}", flush=True)
            rows += case_rows
    for r in rows:
        if r.get("fwd_peak_extra_bytes") is not None:
            r["fwd_peak_mb"] = r["fwd_peak_extra_bytes"] / 2**20
    table = markdown_table(rows, ops.COLUMNS)
    print("\n" + table)
    if out_dir:
        paths = write_results(out_dir, f"ops-{'quick' if quick else 'full'}-{dev.type}", rows, table)
        print("\nwrote " + " and ".join(paths))
    return rows
