"""Multi-kernel strip pooling in plain PyTorch: the executable form of ops.md §4."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def strip_pool_reference(x: torch.Tensor, sizes: tuple[int, ...] = (1, 3, 5, 7)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(v_n, h_n) for n in sizes], v_n = adaptive_avg_pool2d(x, (H, n)) (N, C, H, n),
    h_n = adaptive_avg_pool2d(x, (n, W)) (N, C, n, W); PyTorch's adaptive bins."""
    N, C, H, W = x.shape
    # Planes as a batch of one-channel images: adaptive_avg_pool2d's backward refuses C = 0.
    planes = x.reshape(N * C, 1, H, W)
    return [
        (F.adaptive_avg_pool2d(planes, (H, n)).view(N, C, H, n), F.adaptive_avg_pool2d(planes, (n, W)).view(N, C, n, W))
        for n in sizes
    ]


def nearest_index(out_size: int, in_size: int, device=None) -> torch.Tensor:
    """floor(i * in_size / out_size) for i < out_size, in exact integer arithmetic."""
    return torch.div(torch.arange(out_size, device=device) * in_size, out_size, rounding_mode="floor")


def interpolate_nearest_index(
    out_size: int, in_size: int, dim: int = 3, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """The source index F.interpolate(mode="nearest") reads for i < out_size along `dim` (2 or 3)
    of a `dtype` tensor on `device`: the index BANet's authors expand with (banet.md §3 BA step 3).

    Found by interpolating an arange, so it is whatever PyTorch computes on that device
    for that dtype: for float32/16 and bfloat16 on CPU, min(floor(i * s), in_size - 1) with
    s = in_size / out_size a float32 quotient and the product in float32; float64 computes
    in double and differs at other sizes. Differs from nearest_index at a few sizes (first
    3 -> 123 for float32)."""
    shape = [1, 1, 1, 1]
    shape[dim] = in_size
    src = torch.arange(in_size, dtype=dtype, device=device).view(shape)
    size = (out_size, 1) if dim == 2 else (1, out_size)
    return F.interpolate(src, size=size, mode="nearest").reshape(out_size).to(torch.int64)


def strip_expand_reference(v: torch.Tensor, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """out[n, c, y, x] = v[n, c, y, ix(x)] + h[n, c, iy(y), x], nearest upsampling
    with ix(x) = floor(x * n_v / W), iy(y) = floor(y * n_h / H) in exact integers."""
    H, W = size
    return _nearest(v, 3, W) + _nearest(h, 2, H)


def _nearest(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """t nearest-upsampled to `size` along `dim` with the exact integer index."""
    if t.shape[dim] == 1:
        # A broadcast (inductor's CPU code for index_select's backward fails on a size-1 source).
        shape = list(t.shape)
        shape[dim] = size
        return t.expand(shape)
    return t.index_select(dim, nearest_index(size, t.shape[dim], t.device))


def blur_aware_mask_reference(
    x: torch.Tensor,
    row_table: torch.Tensor,
    col_index: torch.Tensor,
    col_table: torch.Tensor,
    row_index: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x * sigmoid(conv1x1(relu(row_table[..., col_index] + col_table[..., row_index, :]), weight, bias)):
    BANet's first attention mask (banet.md §3 BA steps 3-6) with the strip convs and the
    linear 1x1 fuse conv already applied to the small maps (the tables)."""
    z = torch.relu(row_table.index_select(3, col_index.long()) + col_table.index_select(2, row_index.long()))
    u = F.conv2d(z, weight.reshape(weight.shape[0], weight.shape[1], 1, 1), bias)
    return x * torch.sigmoid(u)
