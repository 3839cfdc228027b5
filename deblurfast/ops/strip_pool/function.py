"""Public strip_pool / strip_expand / blur_aware_mask: argument checks, then the backend the dispatcher
picks (declaration.py)."""

from __future__ import annotations

import torch

from ..._checks import (ArgumentError, ArgumentTypeError, as_int, autocast_inputs, check_like, check_shape,
                        check_tensor, promote_inputs)
from .._fx import fx_leaf
from .declaration import EXPAND_OP, MASK_OP, POOL_OP


@fx_leaf
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

    Returns:
        [(v_n, h_n) for n in sizes]. The Triton backend computes them all in one read of x
        and returns views of one buffer (v_n has row stride sum(sizes), not n).
    """
    op = "strip_pool"
    check_tensor(op, "x", x, 4, "(N, C, H, W)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ArgumentError(f"{op}: x must have H, W >= 1, got shape {tuple(x.shape)}")
    ints = tuple(as_int(n) for n in sizes) if isinstance(sizes, (tuple, list)) else ()
    if not ints or not all(n is not None and n >= 1 for n in ints):
        raise ArgumentError(f"{op}: sizes must be a non-empty sequence of positive ints, got {sizes!r}")
    return POOL_OP(backend, x, ints)


@fx_leaf
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
    v, h = promote_inputs(v, h)
    check_tensor(op, "v", v, 4, "(N, C', H, n_v)")
    check_tensor(op, "h", h, 4, "(N, C', n_h, W)")
    check_like(op, "h", h, "v", v)
    ints = tuple(as_int(s) for s in size) if isinstance(size, (tuple, list)) and len(size) == 2 else ()
    if not ints or not all(s is not None and s >= 1 for s in ints):
        raise ArgumentError(f"{op}: size must be a pair of positive ints (H, W), got {size!r}")
    H, W = ints
    N, C = v.shape[:2]
    if tuple(v.shape[:3]) != (N, C, H) or v.shape[3] < 1:
        raise ArgumentError(f"{op}: v must have shape (N, C', H, n_v) with H={H} and n_v >= 1, got {tuple(v.shape)}")
    if h.shape[0] != N or h.shape[1] != C or h.shape[3] != W or h.shape[2] < 1:
        raise ArgumentError(
            f"{op}: h must have shape (N, C', n_h, W) = ({N}, {C}, n_h, {W}) with n_h >= 1, got {tuple(h.shape)}"
        )
    return EXPAND_OP(backend, v, h, (H, W))


def _index_values(op: str, name: str, t: torch.Tensor, bound: int) -> None:
    """Every value of `t` is in [0, bound). Checked once per tensor and version (a device sync on
    GPU; the models' index tensors are cached, so they pay it once); not while tracing or while
    capturing a CUDA graph, where no sync is possible: there an out-of-range index is clamped by the
    Triton forward (no read leaves the tables) and its gradient is dropped, the reference raises."""
    if torch.compiler.is_compiling() or (t.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    # Inference tensors have no version counter: they are checked on every call.
    stamp = None if t.is_inference() else (t._version, bound)
    if (stamp is not None and getattr(t, "_deblurfast_checked", None) == stamp) or t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= bound:
        raise ArgumentError(f"{op}: {name} values must be in [0, {bound}), got values from {lo} to {hi}")
    if stamp is not None:
        t._deblurfast_checked = stamp


def _index(op: str, name: str, t, length: int, what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(
            f"{op}: {name} must be a torch.Tensor ({length},) of int32/int64 {what}, got {type(t).__name__}"
        )
    if t.dtype not in (torch.int32, torch.int64) or tuple(t.shape) != (length,):
        raise ArgumentError(
            f"{op}: {name} must be an int32/int64 tensor of shape ({length},) ({what}), "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )


@fx_leaf
def blur_aware_mask(
    x: torch.Tensor,
    row_table: torch.Tensor,
    col_index: torch.Tensor,
    col_table: torch.Tensor,
    row_index: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """BANet's blur-aware attention mask applied to x, fused (ops.md §4, banet.md §3 BA steps 3-6):

        z[n, f, y, x] = relu(row_table[n, f, y, col_index[x]] + col_table[n, f, row_index[y], x])
        out[n, c, y, x] = x[n, c, y, x] * sigmoid(sum_f weight[c, f] z[n, f, y, x] + bias[c])

    The tables are the expanded-and-fused strips before expansion: with the 1x1
    fuse conv (linear) applied to the small strip maps, the sum of the expanded
    h- and w-contributions of all sizes is a row table indexed by column and a
    column table indexed by row (see deblurfast.nn.BlurAwareAttention). The
    Triton backend reads x once and never forms z.

    Args:
        x: (N, C, H, W).
        row_table: (N, F, H, KA), same dtype and device.
        col_index: (W,) int32/int64, values in [0, KA) (the Triton kernels clamp them).
        col_table: (N, F, KB, W).
        row_index: (H,) int32/int64, values in [0, KB).
        weight: (C, F) or (C, F, 1, 1) (a 1x1 conv's weight).
        bias: (C,) or None.
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.
    """
    op = "blur_aware_mask"
    x, row_table, col_table, weight, bias = autocast_inputs(x, row_table, col_table, weight, bias)
    check_tensor(op, "x", x, 4, "(N, C, H, W)")
    check_tensor(op, "row_table", row_table, 4, "(N, F, H, KA)")
    check_tensor(op, "col_table", col_table, 4, "(N, F, KB, W)")
    check_tensor(op, "weight", weight, (2, 4), "(C, F) or (C, F, 1, 1)")
    for name, t in (("row_table", row_table), ("col_table", col_table), ("weight", weight)):
        check_like(op, name, t, "x", x)
    N, C, H, W = x.shape
    if H < 1 or W < 1:
        raise ArgumentError(f"{op}: x must have H, W >= 1, got shape {tuple(x.shape)}")
    Fc = row_table.shape[1]
    if tuple(row_table.shape[:3]) != (N, Fc, H) or row_table.shape[3] < 1 or Fc < 1:
        raise ArgumentError(
            f"{op}: row_table must have shape (N, F, H, KA) = ({N}, F, {H}, KA) with F, KA >= 1, "
            f"got {tuple(row_table.shape)}"
        )
    if col_table.shape[0] != N or col_table.shape[1] != Fc or col_table.shape[3] != W or col_table.shape[2] < 1:
        raise ArgumentError(
            f"{op}: col_table must have shape (N, F, KB, W) = ({N}, {Fc}, KB, {W}) with KB >= 1, "
            f"got {tuple(col_table.shape)}"
        )
    if tuple(weight.shape[:2]) != (C, Fc) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ArgumentError(
            f"{op}: weight must have shape (C, F) = ({C}, {Fc}) or ({C}, {Fc}, 1, 1), got {tuple(weight.shape)}"
        )
    if bias is not None:
        check_tensor(op, "bias", bias, 1, "(C,)")
        check_like(op, "bias", bias, "x", x)
        check_shape(op, "bias", bias, (C,), "(C,)")
    _index(op, "col_index", col_index, W, "a row_table entry per column")
    _index(op, "row_index", row_index, H, "a col_table entry per row")
    for name, t in (("col_index", col_index), ("row_index", row_index)):
        if t.device != x.device:
            raise ArgumentError(f"{op}: {name} is on {t.device} but x is on {x.device}; expected the same device")
    _index_values(op, "col_index", col_index, row_table.shape[3])
    _index_values(op, "row_index", row_index, col_table.shape[2])
    return MASK_OP(backend, x, row_table, col_index, col_table, row_index, weight, bias)
