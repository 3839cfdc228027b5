"""The declarations of strip_pool, strip_expand and blur_aware_mask: schema (the public argument
order), reference, output shape and backends with their limits. The compiled kernels are
csrc/cpu/strip_pool.cpp, the Triton ones kernels/strip_pool.py."""

from __future__ import annotations

import torch

from ..._registration import Compiled, OpSpec, Triton, register_op
from ...kernels.limits import (BLUR_AWARE_MASK_MAX_FUSE_CHANNELS, STRIP_POOL_MAX_BINS, STRIP_POOL_MAX_SIZES,
                               int32_overflow)
from .buffer import pool_buffer_reference, pool_buffer_views
from .reference import blur_aware_mask_reference, strip_expand_reference, strip_pool_reference

CPU = Compiled((torch.float32, torch.float64))


def _triton_pool_limits(x, sizes) -> str | None:
    if len(sizes) > STRIP_POOL_MAX_SIZES:
        return f"{len(sizes)} sizes > {STRIP_POOL_MAX_SIZES}"
    if sum(sizes) > STRIP_POOL_MAX_BINS:
        return f"sum(sizes) = {sum(sizes)} > {STRIP_POOL_MAX_BINS} (all bins are held in registers)"
    H, W = x.shape[-2:]
    return int32_overflow(("the bin bounds (n + 1) * max(H, W)", (max(sizes) + 1) * max(H, W)), ("H*W", H * W))


def _triton_expand_limits(v, h, size) -> str | None:
    if max(v.shape[3], h.shape[2]) > STRIP_POOL_MAX_BINS:
        return (f"n_v = {v.shape[3]} or n_h = {h.shape[2]} > {STRIP_POOL_MAX_BINS} "
                "(the backward holds the bins in registers)")
    return int32_overflow(("H*W", size[0] * size[1]))


def _triton_mask_limits(x, row_table, col_index, col_table, row_index, weight, bias) -> str | None:
    if row_table.shape[3] > STRIP_POOL_MAX_BINS or col_table.shape[2] > STRIP_POOL_MAX_BINS:
        return f"tables wider than {STRIP_POOL_MAX_BINS} entries (the backward holds them in registers)"
    if row_table.shape[1] > BLUR_AWARE_MASK_MAX_FUSE_CHANNELS:
        return f"F = {row_table.shape[1]} > {BLUR_AWARE_MASK_MAX_FUSE_CHANNELS} fuse channels (held in registers)"
    H, W = x.shape[-2:]
    return int32_overflow(("H*W", H * W))


def _pool_buffer_shape(x, sizes) -> tuple[int, int, int]:
    N, C, H, W = x.shape
    return N, C, (H + W) * sum(sizes)


POOL_OP = register_op(OpSpec(
    "strip_pool",
    "(Tensor x, int[] sizes) -> Tensor",
    reference=strip_pool_reference,
    output_shape=_pool_buffer_shape,
    backends={"cpu": CPU, "triton": Triton("strip_pool", "pool_forward", "pool_backward", can_run=_triton_pool_limits)},
    # The kernels return one buffer holding every pooled map (see .buffer).
    finish=lambda buf, x, sizes: pool_buffer_views(buf, x.shape, sizes),
    packed_reference=pool_buffer_reference,
))
EXPAND_OP = register_op(OpSpec(
    "strip_expand",
    "(Tensor v, Tensor h, int[2] size) -> Tensor",
    reference=strip_expand_reference,
    output_shape=lambda v, h, size: (*v.shape[:2], *size),
    backends={"cpu": CPU, "triton": Triton("strip_pool", "expand_forward", "expand_backward",
                                                   can_run=_triton_expand_limits)},
))
MASK_OP = register_op(OpSpec(
    "blur_aware_mask",
    "(Tensor x, Tensor row_table, Tensor col_index, Tensor col_table, Tensor row_index, Tensor weight, "
    "Tensor? bias) -> Tensor",
    reference=blur_aware_mask_reference,
    output_shape=lambda x, *args: x.shape,
    backends={"cpu": CPU, "triton": Triton("strip_pool", "mask_forward", "mask_backward", can_run=_triton_mask_limits)},
))
