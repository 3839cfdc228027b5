"""Padding arithmetic for Triton kernels (the Triton twin of csrc/common/padding.h).

MODE: 0 zeros, 1 reflect, 2 replicate, with torch.nn.functional.pad's meaning.
"""

import triton
import triton.language as tl

PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2}


@triton.jit
def pad_source(q, L, MODE: tl.constexpr):
    """Image index read at coordinate q (any shape) of an axis of length L, and
    whether it is inside (False: the padded value is zero). Reflect needs pad < L."""
    if MODE == 1:
        q = tl.where(q < 0, -q, q)
        q = tl.where(q >= L, 2 * (L - 1) - q, q)
    elif MODE == 2:
        q = tl.minimum(tl.maximum(q, 0), L - 1)
    return q, (q >= 0) & (q < L)


def num_preimages(mode: int, pad: int) -> int:
    """How many candidates pad_preimage enumerates per coordinate."""
    return (1, 3, 2 * pad + 1)[mode]


@triton.jit
def pad_preimage(y, idx, L, PAD: tl.constexpr, MODE: tl.constexpr):
    """Candidate `idx` among the coordinates q in [-PAD, L-1+PAD] with
    pad_source(q) == y, and whether it exists. Candidate 0 is y itself."""
    if MODE == 1:
        q = tl.where(idx == 0, y, tl.where(idx == 1, -y, 2 * (L - 1) - y))
        ok = (idx == 0) | ((idx == 1) & (y >= 1) & (y <= PAD)) | ((idx == 2) & (y <= L - 2) & (y >= L - 1 - PAD))
    elif MODE == 2:
        # candidates 1..PAD are -1..-PAD (read as row 0), PAD+1..2PAD are L..L-1+PAD (read as L-1)
        q = tl.where(idx == 0, y, tl.where(idx <= PAD, -idx, L - 1 + idx - PAD))
        ok = (idx == 0) | ((idx <= PAD) & (y == 0)) | ((idx > PAD) & (y == L - 1))
    else:
        q = y
        ok = y >= 0
    return q, ok
