"""Limits of the Triton kernels, each stated once: the kernels import them, and the Triton
backends' can_run (deblurfast/ops/<op>/declaration.py) reads them without importing triton."""

from __future__ import annotations

INT32_LIMIT = 2**31  # the kernels index with int32

EFFICIENT_ATTENTION_MAX_MAPS = 128  # a query column's softmax over the C2 maps is kept in one tile
STRIP_POOL_MAX_SIZES = 8  # strip_pool's sizes are passed as the eight scalars S0..S7
STRIP_POOL_MAX_BINS = 64  # the bins of all sizes (strip_expand's n_v, n_h; the mask tables) are one tile axis
BLUR_AWARE_MASK_MAX_FUSE_CHANNELS = 512  # the F fuse channels of a pixel are held in registers


def int32_overflow(*counts: tuple[str, int]) -> str | None:
    """Why the first (what, count) at or over 2**31 needs 64-bit positions, or None: the one
    statement of the 32-bit indexing limit."""
    for what, count in counts:
        if count >= INT32_LIMIT:
            return f"{what} = {count} needs 64-bit positions (the kernels index in 32 bits)"
    return None
