"""Public strip_pool / strip_expand: argument checks, then the backend the dispatcher picks."""

from __future__ import annotations

import torch

from ..._checks import check_like, check_tensor
from ...dispatch import FLOAT_DTYPES, Impl, Op
from .reference import strip_expand_reference, strip_pool_reference

POOL_OP = Op("strip_pool", {"reference": Impl(strip_pool_reference, FLOAT_DTYPES)})
EXPAND_OP = Op("strip_expand", {"reference": Impl(strip_expand_reference, FLOAT_DTYPES)})


def strip_pool(
    x: torch.Tensor, sizes: tuple[int, ...] = (1, 3, 5, 7), *, backend: str | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Multi-kernel strip pooling of BANet (ops.md §4): for each n in `sizes`,
    v_n = adaptive_avg_pool2d(x, (H, n)) (N, C, H, n) and
    h_n = adaptive_avg_pool2d(x, (n, W)) (N, C, n, W), with PyTorch's adaptive
    bins [floor(b L / n), ceil((b + 1) L / n)).

    Args:
        x: (N, C, H, W) with H, W >= 1.
        sizes: positive ints.
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.
    """
    op = "strip_pool"
    check_tensor(op, "x", x, 4, "(N, C, H, W)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{op}: x must have H, W >= 1, got shape {tuple(x.shape)}")
    sizes = tuple(sizes)
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"{op}: sizes must be a non-empty sequence of positive ints, got {sizes!r}")
    fn = POOL_OP.select(backend, x.device, x.dtype, x, sizes)
    return fn(x, sizes)


def strip_expand(
    v: torch.Tensor, h: torch.Tensor, size: tuple[int, int], *, backend: str | None = None
) -> torch.Tensor:
    """out[n, c, y, x] = v[n, c, y, floor(x n_v / W)] + h[n, c, floor(y n_h / H), x] (ops.md §4):
    the sum of a vertical and a horizontal strip, each nearest-upsampled to
    `size` = (H, W) with exact integer indices.

    Args:
        v: (N, C', H, n_v).
        h: (N, C', n_h, W), same dtype and device.
        size: (H, W).
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.
    """
    op = "strip_expand"
    check_tensor(op, "v", v, 4, "(N, C', H, n_v)")
    check_tensor(op, "h", h, 4, "(N, C', n_h, W)")
    check_like(op, "h", h, "v", v)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size)):
        raise ValueError(f"{op}: size must be a pair of positive ints (H, W), got {size!r}")
    H, W = size
    N, C = v.shape[:2]
    if tuple(v.shape[:3]) != (N, C, H) or v.shape[3] < 1:
        raise ValueError(f"{op}: v must have shape (N, C', H, n_v) with H={H} and n_v >= 1, got {tuple(v.shape)}")
    if h.shape[0] != N or h.shape[1] != C or h.shape[3] != W or h.shape[2] < 1:
        raise ValueError(
            f"{op}: h must have shape (N, C', n_h, W) = ({N}, {C}, n_h, {W}) with n_h >= 1, got {tuple(h.shape)}"
        )
    fn = EXPAND_OP.select(backend, v.device, v.dtype, v, h, (H, W))
    return fn(v, h, (H, W))
