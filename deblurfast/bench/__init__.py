"""`deblurfast bench`: op benchmarks (deblurfast.bench.ops) with honest timing
(deblurfast.bench.core); see shared/specs/benchmarks.md."""

from __future__ import annotations

import os

import torch

from .._progress import progress
from . import ops
from ..models import list_models
from .core import environment, markdown_table, write_results
from .plots import plot_rows


def _ran(row: dict) -> bool:
    """The candidate ran (timed, or failed a check or with an error), as opposed to refused to run."""
    return "fwd_ms_median" in row or row["status"].startswith(("TOLERANCE", "error"))


def not_run_here(rows: list[dict]) -> str | None:
    """One line naming the candidates that ran for no case here, each with its reason
    (a candidate merely without an implementation of some op is not named)."""
    reasons = {}
    for r in rows:
        if not r["status"].startswith("not implemented"):
            reasons.setdefault(r["backend"], []).append(None if _ran(r) else r["status"])
    never = {b: max(why, key=why.count) for b, why in reasons.items() if None not in why}  # its commonest reason
    return "cannot run here: " + "; ".join(f"{b} ({why})" for b, why in never.items()) if never else None


def run_ops(quick: bool, device: str | None = None, dtypes: list[str] | None = None, reps: int | None = None,
            out_dir: str | None = None, compile_peer: bool | None = None, peers: bool = False) -> list[dict]:
    """Benchmarks every op (see deblurfast.bench.ops.cases, or ops.peer_cases with peers=True) under a
    progress bar; prints a markdown table of what ran and a line naming what cannot run here; writes
    every row, refusals included, to <out_dir>/ops-{quick,full,peers}-<device>.{jsonl,md}."""
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
    cases = ops.peer_cases() if peers else ops.cases(dev, quick)
    bar = progress(total=len(cases) * len(names), desc="bench", unit="cases")
    for case in cases:
        for name in names:
            bar.set_postfix_str(f"{case.op} {case.shape} {name}")
            case_rows = ops.run_case(case, dev, getattr(torch, name), reps, env, compile_peer)
            bar.update()
            for r in case_rows:
                for key in ("fwd", "fwd_bwd"):
                    if r.get(f"{key}_peak_extra_bytes") is not None:
                        r[f"{key}_peak_mb"] = r[f"{key}_peak_extra_bytes"] / 2**20
            rows += case_rows
            if out_dir:  # so far, so that an interrupted sweep keeps what it measured
                write_results(out_dir, stem, rows, markdown_table(rows, ops.COLUMNS))
    bar.close()
    table = markdown_table(rows, ops.COLUMNS)
    print("\n" + markdown_table([r for r in rows if _ran(r)], ops.COLUMNS))
    line = not_run_here(rows)
    if line:
        print(line)
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
    compile_peer = True if compile_peer is None else compile_peer
    env = environment(dev)
    print(f"deblurfast bench --models on {env['device']} ({dev.type}), {size[0]}x{size[1]}, torch {env['torch']}, "
          f"commit {env['commit']}, {reps} timed runs each", flush=True)
    rows = []
    names = names or list_models()
    for name in progress(names, desc="bench --models", unit="models"):
        rows += model_bench.run_model(name, dev, size, reps, env, compile_peer)
        if out_dir:
            write_results(out_dir, f"models-{dev.type}", rows, markdown_table(rows, model_bench.COLUMNS))
    table = markdown_table(rows, model_bench.COLUMNS)
    print("\n" + table)
    if out_dir:
        paths = write_results(out_dir, f"models-{dev.type}", rows, table) + plot_rows(rows, out_dir, f"models-{dev.type}")
        print(f"\nwrote {len(paths)} files to {out_dir}")
    return rows
