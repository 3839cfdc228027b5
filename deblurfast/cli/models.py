"""`deblurfast models`: every model with its size, conventions and cost at 720p."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..dispatch import use_backend
from ..models import create, list_models, model_entry, num_parameters


def gflops_720p(name: str) -> float:
    """GFLOPs of one 720x1280 frame: convolutions and matrix products (FlopCounterMode),
    counted on the meta device, so nothing is computed; the deformable convolution's
    reference path counts as its matrix product."""
    model = create(name).to("meta").eval()
    entry = model_entry(name)
    multiple = entry.io.multiple
    h, w = -(-720 // multiple) * multiple, -(-1280 // multiple) * multiple
    x = torch.empty(1, 3, h, w, device="meta")
    with FlopCounterMode(display=False) as counter, use_backend("reference"), torch.no_grad():
        entry.call(model, x)
    return counter.get_total_flops() / 1e9


def print_models(with_gflops: bool = True) -> list[dict]:
    rows = []
    for name in list_models():
        entry = model_entry(name)
        params = num_parameters(create(name).to("meta"))
        try:
            gflops = f"{gflops_720p(name):.0f}" if with_gflops else "-"
        except Exception as e:  # a model that cannot run on meta tensors still gets listed
            gflops = f"n/a ({type(e).__name__})"
        io = entry.io
        rows.append({"model": name, "parameters": params, "gflops_720p": gflops,
                     "input": f"{io.channel_order} in [{io.value_range[0]:g}, {io.value_range[1]:g}], "
                              f"H, W multiple of {io.multiple}", "paper": entry.paper})
    widths = {k: max(len(k), *(len(f"{r[k]:,}" if isinstance(r[k], int) else str(r[k])) for r in rows))
              for k in ("model", "parameters", "gflops_720p", "input")} if rows else {}
    header = ["model", "parameters", "gflops_720p", "input"]
    print("  ".join(h.ljust(widths[h]) for h in header) + "  paper")
    for r in rows:
        cells = [r["model"], f"{r['parameters']:,}", r["gflops_720p"], r["input"]]
        print("  ".join(c.ljust(widths[h]) for c, h in zip(cells, header)) + "  " + r["paper"])
    return rows
