"""dynamic_filter2d's one declaration: schema (the public argument order, `normalize` as the
flag `softmax`), reference, output shape and backends with their limits. The compiled kernels
are csrc/{cpu,cuda}/dynamic_filter2d*, the Triton ones kernels/dynamic_filter2d.py."""

from __future__ import annotations

import torch

from ... import _ext
from ..._registration import Compiled, OpSpec, Triton, register_op
from ...dispatch import FLOAT_DTYPES
from ...kernels.layout import memory_format
from ...kernels.limits import int32_overflow
from .reference import dynamic_filter2d_reference


def _kernel_limits(input, kernel, kernel_size, dilation, padding_mode, softmax) -> str | None:
    """The limits every kernel (C++, CUDA, Triton) shares."""
    H, W = input.shape[-2:]
    pad = dilation * (kernel_size - 1) // 2
    if padding_mode == "replicate" and pad > max(H, W):
        return (f"replicate padding {pad} > max(H, W) = {max(H, W)}: the backward enumerates every padded "
                "coordinate of the border pixels")
    return int32_overflow(("H*W", H * W))


def _triton_limits(input, kernel, kernel_size, dilation, padding_mode, softmax) -> str | None:
    padded = max(input.shape[-2:]) + dilation * (kernel_size - 1)
    return (int32_overflow(("the padded size max(H, W) + dilation*(kernel_size-1)", padded))
            or _kernel_limits(input, kernel, kernel_size, dilation, padding_mode, softmax))


def _cuda_limits(input, kernel, kernel_size, dilation, padding_mode, softmax) -> str | None:
    largest = _ext.DYNAMIC_FILTER2D_CUDA_MAX_KERNEL_SIZE
    if largest is not None and kernel_size > largest:
        return f"kernel_size {kernel_size} > {largest} (taps are kept in registers)"
    return _kernel_limits(input, kernel, kernel_size, dilation, padding_mode, softmax)


OP = register_op(OpSpec(
    "dynamic_filter2d",
    "(Tensor input, Tensor kernel, int kernel_size, int dilation, str padding_mode, bool softmax) -> Tensor",
    reference=dynamic_filter2d_reference,
    output_shape=lambda input, *args: input.shape,
    backends={
        "cpu": Compiled((torch.float32, torch.float64), _kernel_limits),
        "cuda": Compiled(FLOAT_DTYPES, _cuda_limits),
        "triton": Triton("dynamic_filter2d", can_run=_triton_limits,
                          memory_format=lambda input, *args: memory_format(input)),
    },
))
