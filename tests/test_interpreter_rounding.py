"""The Triton interpreter rounds float32 to bfloat16 as a GPU does (conftest.py makes it)."""

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="checks the Triton interpreter (TRITON_INTERPRET=1)")


def test_float32_to_bfloat16_rounds_to_nearest_even():
    import triton
    import triton.language as tl

    @triton.jit
    def cast(x, y, n, BLOCK: tl.constexpr):
        o = tl.arange(0, BLOCK)
        tl.store(y + o, tl.load(x + o, mask=o < n).to(tl.bfloat16), mask=o < n)

    # halfway cases both ways, values that carry into the exponent, subnormals, signs, inf and nan
    bits = torch.tensor([0x3F808000, 0x3F818000, 0x3F80C000, 0x3FFFFFFF, 0x3F7FFFFF, 0x00400001, 0x80012345,
                         0xBF808001, 0x7F7FFFFF, 0x7F800000, 0x7FC00000], dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits.view(torch.float32), torch.randn(1000, generator=torch.Generator().manual_seed(0))])
    y = torch.empty(x.shape, dtype=torch.bfloat16)
    cast[(1,)](x, y, x.numel(), BLOCK=1024)
    expected = x.to(torch.bfloat16)
    assert torch.equal(y.view(torch.int16), expected.view(torch.int16))
