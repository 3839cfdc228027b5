"""The tables of the docs, generated from committed results, never typed by hand:
`python -m deblurfast.bench.report` rewrites the part of docs/benchmarks.md between the
`<!-- bench:start -->` and `<!-- bench:end -->` markers (bench/results/<device>/*.jsonl), and the
part of README.md between `<!-- heldout:start -->` and `<!-- heldout:end -->` (the bundled model's
held-out benchmark by blur family, bench/results/cpu/heldout-default.json)."""

from __future__ import annotations

import glob
import json
import os

from .._files import write_text
from .core import markdown_table
from .models import COLUMNS as MODEL_COLUMNS
from .ops import COLUMNS as OP_COLUMNS

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
HELDOUT_START, HELDOUT_END = "<!-- heldout:start -->", "<!-- heldout:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(results_dir: str) -> dict[str, list[dict]]:
    """file stem -> rows, for every measured results file under results_dir/<device>/ (the static kernel
    reports, results_dir/static-<arch>/, are compiler readings with a README of their own)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "*.jsonl"))):
        if os.path.basename(os.path.dirname(path)).startswith("static-"):
            continue
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
    for readme in sorted(glob.glob(os.path.join(results_dir, "static-*", "README.md"))):
        rel = os.path.relpath(readme, results_dir)
        parts.append(f"#### `bench/results/{os.path.dirname(rel)}/`\n\nThe static kernel report (*static "
                     f"estimate, not measured*): [`bench/results/{rel}`](../bench/results/{rel}).")
    if not parts:
        return "No benchmark results are committed yet."
    return "\n\n".join(parts)


def render_heldout(path: str) -> str:
    """The held-out table of an evaluation result file, with what it was measured with."""
    from ..train.evaluate import table

    with open(path) as f:
        result = json.load(f)
    m = result["meta"]
    return (f"`{os.path.relpath(path, ROOT)}`: {m['model']} (weights {m['weights_sha256_16']}), {m['device']} "
            f"({m['hardware']}), torch {m['torch']}, commit {m.get('commit')}; {len(m['photos'])} held-out photos + "
            f"{m['scenes_per_size']} held-out scenes at {' and '.join(f'{s} px' for s in m['sizes'])}.\n\n"
            + table(result))


PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
README = os.path.join(ROOT, "README.md")
HELDOUT = os.path.join(ROOT, "bench", "results", "cpu", "heldout-default.json")


def _rewrite(page: str, start: str, end: str, body: str) -> bool:
    with open(page) as f:
        text = f.read()
    if start not in text or end not in text:
        raise SystemExit(f"{page} lacks the {start} / {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        write_text(page, new)
    return new != text


def update_page(page: str = PAGE, results_dir: str = os.path.join(ROOT, "bench", "results")) -> bool:
    """Rewrites the generated part of the page; returns whether it changed."""
    return _rewrite(page, START, END, render(results_dir))


def update_readme(page: str = README, result: str = HELDOUT) -> bool:
    """Rewrites the README's held-out table from the committed evaluation; returns whether it changed."""
    return _rewrite(page, HELDOUT_START, HELDOUT_END, render_heldout(result))


if __name__ == "__main__":
    for path, changed in ((PAGE, update_page()), (README, update_readme())):
        print(f"{os.path.relpath(path)} updated" if changed else f"{os.path.relpath(path)} already up to date")
