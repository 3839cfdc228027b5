"""The benchmark tables of docs/benchmarks.md, generated from committed results
(bench/results/<device>/*.jsonl), never typed by hand: `python -m deblurfast.bench.report`
rewrites the part of that page between the `<!-- bench:start -->` and `<!-- bench:end -->` markers."""

from __future__ import annotations

import glob
import json
import os
import sys

from .._files import write_text
from .core import markdown_table
from .models import COLUMNS as MODEL_COLUMNS
from .ops import COLUMNS as OP_COLUMNS

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(results_dir: str) -> dict[str, list[dict]]:
    """file stem -> rows, for every results file under results_dir/<device>/."""
    found = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "*.jsonl"))):
        with open(path) as f:
            found[os.path.relpath(path, results_dir)] = [json.loads(line) for line in f if line.strip()]
    return found


def render(results_dir: str) -> str:
    parts = []
    for rel, rows in load(results_dir).items():
        if not rows:
            continue
        first = rows[0]
        ran = [r for r in rows if "fwd_ms_median" in r or "latency_ms_median" in r]
        columns = MODEL_COLUMNS if "model" in first else OP_COLUMNS
        parts.append(f"#### `bench/results/{rel}`\n\n{first.get('device')} ({first.get('device_type')}), torch "
                     f"{first.get('torch')}, triton {first.get('triton')}, CUDA {first.get('cuda')}, commit "
                     f"{first.get('commit')}; {len(ran)} of {len(rows)} rows ran (the others say why not in the "
                     f"file).\n\n" + markdown_table(ran, columns))
    if not parts:
        return "No benchmark results are committed yet."
    return "\n\n".join(parts)


PAGE = os.path.join(ROOT, "docs", "benchmarks.md")


def update_page(page: str = PAGE, results_dir: str = os.path.join(ROOT, "bench", "results")) -> bool:
    """Rewrites the generated part of the page; returns whether it changed."""
    with open(page) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{page} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render(results_dir)}\n{END}{tail}"
    if new != text:
        write_text(page, new)
    return new != text


if __name__ == "__main__":
    page = sys.argv[1] if len(sys.argv) > 1 else PAGE
    changed = update_page(*sys.argv[1:])
    print(f"{os.path.relpath(page)} updated" if changed else f"{os.path.relpath(page)} already up to date")
