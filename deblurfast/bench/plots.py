"""PNG plots of benchmark rows (matplotlib, optional): one horizontal bar chart per
(op or model, shape, dtype), median time per candidate, with p90 whiskers."""

from __future__ import annotations

import os
import re

from .._files import atomic_path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]


def plot_rows(rows: list[dict], out_dir: str, prefix: str) -> list[str]:
    """Writes one PNG per group of timed rows into out_dir; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plots: matplotlib is not installed (pip install matplotlib)")
        return []
    model_rows = rows and "model" in rows[0]
    median, p90, who = ("latency_ms_median", "latency_ms_p90", "candidate") if model_rows else \
        ("fwd_ms_median", "fwd_ms_p90", "backend")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if median in r:
            key = (r["model"], r["size"]) if model_rows else (r["op"], r["shape"], r["dtype"], r["layout"])
            groups.setdefault(key, []).append(r)
    paths = []
    for key, group in groups.items():
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(group) + 1.2))
        names = [r[who] for r in group]
        values = [r[median] for r in group]
        errors = [[0] * len(group), [max(0.0, r[p90] - r[median]) for r in group]]
        ax.barh(names, values, xerr=errors, color="#4c72b0")
        ax.invert_yaxis()
        ax.set_xlabel("median ms (whisker: p90)" + ("" if model_rows else ", forward"))
        first = group[0]
        ax.set_title(f"{' '.join(str(k) for k in key)}\n{first.get('device')}, commit {first.get('commit')}",
                     fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{prefix}-{_slug('-'.join(str(k) for k in key))}.png")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
