"""Multi-kernel strip pooling in plain PyTorch: the executable form of ops.md §4."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def strip_pool_reference(x: torch.Tensor, sizes: tuple[int, ...] = (1, 3, 5, 7)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(v_n, h_n) for n in sizes], v_n = adaptive_avg_pool2d(x, (H, n)) (N, C, H, n),
    h_n = adaptive_avg_pool2d(x, (n, W)) (N, C, n, W); PyTorch's adaptive bins."""
    H, W = x.shape[-2:]
    return [(F.adaptive_avg_pool2d(x, (H, n)), F.adaptive_avg_pool2d(x, (n, W))) for n in sizes]


def nearest_index(out_size: int, in_size: int, device=None) -> torch.Tensor:
    """floor(i * in_size / out_size) for i < out_size, in exact integer arithmetic."""
    return torch.div(torch.arange(out_size, device=device) * in_size, out_size, rounding_mode="floor")


def strip_expand_reference(v: torch.Tensor, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """out[n, c, y, x] = v[n, c, y, ix(x)] + h[n, c, iy(y), x], nearest upsampling
    with ix(x) = floor(x * n_v / W), iy(y) = floor(y * n_h / H) in exact integers."""
    H, W = size
    ix = nearest_index(W, v.shape[-1], v.device)
    iy = nearest_index(H, h.shape[-2], h.device)
    return v.index_select(3, ix) + h.index_select(2, iy)
