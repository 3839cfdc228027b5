"""Public dynamic_filter2d: argument checks, then the backend the dispatcher picks (declaration.py)."""

from __future__ import annotations

import torch

from ..._checks import INT64_MAX, ArgumentError, as_int, autocast_inputs, check_like, check_shape, check_tensor
from .._fx import fx_leaf
from .declaration import OP

PADDING_MODES = ("zeros", "reflect", "replicate")
NORMALIZE = (None, "softmax")


def check_arguments(kernel_size, dilation, padding_mode, normalize, op: str = "dynamic_filter2d") -> tuple[int, int]:
    """The non-tensor arguments (shared with nn.DynamicFilter2d, which checks them when built);
    returns (kernel_size, dilation) as ints (any integral scalar is taken)."""
    k, d = as_int(kernel_size), as_int(dilation)
    if k is None or k < 1 or k % 2 == 0:
        raise ArgumentError(f"{op}: kernel_size must be a positive odd int, got {kernel_size!r}")
    if d is None or d < 1:
        raise ArgumentError(f"{op}: dilation must be an int >= 1, got {dilation!r}")
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ArgumentError(f"{op}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if normalize is not None and (not isinstance(normalize, str) or normalize not in NORMALIZE):
        raise ArgumentError(f"{op}: normalize must be None or 'softmax', got {normalize!r}")
    return k, d


@fx_leaf
def dynamic_filter2d(
    input: torch.Tensor,
    kernel: torch.Tensor,
    kernel_size: int = 3,
    dilation: int = 1,
    padding_mode: str = "reflect",
    normalize: str | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-pixel dynamic filtering with one k x k kernel per pixel and channel group (ops.md §2).

    out[n, c, h, w] = sum_{i,j} K[n, g*k*k + i*k + j, h, w] * xpad[n, c, h + i*d, w + j*d]

    with g = c // (C / G), xpad = `input` padded by d*(k-1)/2 per side, and K =
    `kernel`, or its softmax over the k*k taps when normalize="softmax" (fused).
    Taps are row-major and not flipped (a correlation, as nn.Unfold orders them).
    With zeros padding a tap that reads the padding is skipped: its kernel value
    is not read (a NaN there changes nothing).

    Args:
        input: (N, C, H, W).
        kernel: (N, G*k*k, H, W), same dtype and device; G divides C.
        kernel_size: k, odd.
        dilation: d >= 1.
        padding_mode: "zeros", "reflect" or "replicate" (torch.nn.functional.pad's meaning).
        normalize: None or "softmax".
        backend: None (see deblurfast.dispatch), "auto", a backend name or a comma-separated list.

    Returns:
        (N, C, H, W), same dtype and device as `input`.
    """
    op = "dynamic_filter2d"
    input, kernel = autocast_inputs(input, kernel)
    check_tensor(op, "input", input, 4, "(N, C, H, W)")
    check_tensor(op, "kernel", kernel, 4, "(N, G*k*k, H, W)")
    check_like(op, "kernel", kernel, "input", input)
    kernel_size, dilation = check_arguments(kernel_size, dilation, padding_mode, normalize)
    N, C, H, W = input.shape
    taps = kernel_size * kernel_size
    if kernel.shape[1] == 0 or kernel.shape[1] % taps:
        raise ArgumentError(
            f"{op}: kernel must have G*k*k channels with k*k = {taps} (kernel_size={kernel_size}), "
            f"got {kernel.shape[1]}"
        )
    groups = kernel.shape[1] // taps
    if C % groups:
        raise ArgumentError(f"{op}: input channels C={C} must be divisible by the kernel's groups G={groups}")
    check_shape(op, "kernel", kernel, (N, groups * taps, H, W), "(N, G*k*k, H, W)")
    pad = dilation * (kernel_size - 1) // 2
    if max(H, W) + 2 * pad > INT64_MAX:
        raise ArgumentError(
            f"{op}: the padded size max(H, W) + dilation*(kernel_size-1) = {max(H, W) + 2 * pad} does not fit in "
            f"64-bit integers (dilation={dilation}, kernel_size={kernel_size})"
        )
    if padding_mode == "reflect" and (pad >= H or pad >= W):
        raise ArgumentError(
            f"{op}: reflect padding dilation*(kernel_size-1)/2 = {pad} must be smaller than the input's "
            f"H and W, got H={H}, W={W}"
        )
    if padding_mode == "replicate" and pad > 0 and (H == 0 or W == 0):
        raise ArgumentError(f"{op}: replicate padding needs H, W > 0, got H={H}, W={W}")
    return OP(backend, input, kernel, kernel_size, dilation, padding_mode, normalize == "softmax")
