"""deblurfast's CUDA kernels, run on the CPU: the same functors the GPU launches,
compiled by nvcc for the host (tests/cuda_emulation). Checks their arithmetic
against the loop-level oracle and the reference on a machine without a GPU."""

import pytest
import torch

import cuda_emulator as emu
import oracles
from deblurfast.ops.dynamic_filter2d import dynamic_filter2d_reference
from deblurfast.testing import assert_close
from helpers import leaf

MODES = ("zeros", "reflect", "replicate")


def reference_grads(x, kernel, k, d, mode, softmax):
    xs, ks = leaf(x.double()), leaf(kernel.double())
    out = dynamic_filter2d_reference(xs, ks, k, d, mode, softmax)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gx, gk = torch.autograd.grad(out, (xs, ks), g)
    return out.detach(), g, gx, gk


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize(
    "k,d,groups,shape",
    [
        (3, 1, 1, (2, 3, 6, 7)),
        (3, 2, 2, (1, 4, 7, 9)),
        (5, 1, 1, (1, 2, 6, 6)),
        (7, 1, 2, (1, 4, 9, 8)),
        (1, 1, 3, (2, 3, 4, 5)),
        (9, 1, 1, (1, 2, 10, 11)),  # the generic (non-specialized) kernel size
    ],
)
@pytest.mark.parametrize("min_items", [1, 10**6], ids=["one_chunk", "channel_chunks"])
def test_float64_against_oracle_and_reference(mode, softmax, k, d, groups, shape, min_items):
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    kernel = torch.randn(n, groups * k * k, h, w, dtype=torch.float64)
    out = emu.dynamic_filter2d_forward(x, kernel, k, d, mode, softmax, min_items)
    assert_close(out, oracles.dynamic_filter2d(x, kernel, k, d, mode, softmax), what="forward")
    _, g, rgx, rgk = reference_grads(x, kernel, k, d, mode, softmax)
    gx, gk = emu.dynamic_filter2d_backward(g, x, kernel, k, d, mode, softmax, min_items=min_items)
    assert_close(gx, rgx, what="grad_input")
    assert_close(gk, rgk, what="grad_kernel")
    # each gradient alone (the other output not requested, no workspace when not needed)
    gx_only, none = emu.dynamic_filter2d_backward(g, x, kernel, k, d, mode, softmax, mask=(True, False))
    none2, gk_only = emu.dynamic_filter2d_backward(g, x, kernel, k, d, mode, softmax, mask=(False, True))
    assert none is None and none2 is None
    assert torch.equal(gx_only, gx) and torch.equal(gk_only, gk)


@pytest.mark.parametrize("divisor", [1, 2, 3, 7, 64, 921_600, 2**31 - 1, 2**31, 2**32 + 5, 3**30])
def test_index_division_by_multiply_high(divisor):
    """DivMod, which replaces the kernels' 64-bit `/` (a subroutine call on the GPU), against exact
    integer division, at the edges of the range: multiples of the divisor and their neighbours up to 2^62."""
    g = torch.Generator().manual_seed(divisor % 1000)
    edges = [0, 1, divisor - 1, divisor, divisor + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62 - 1, 2**62]
    q = [2**62 // divisor, 2**40 // divisor, 12345]
    edges += [m * divisor + e for m in q for e in (-1, 0, 1)]
    dividends = torch.cat([torch.tensor([e for e in edges if 0 <= e <= 2**62], dtype=torch.int64),
                           torch.randint(0, 2**62, (4096,), generator=g, dtype=torch.int64)])
    expected = torch.tensor([int(n) // divisor for n in dividends.tolist()], dtype=torch.int64)
    assert torch.equal(emu.divmod_quotients(divisor, dividends), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_low_precision(dtype, mode):
    x = torch.randn(1, 6, 9, 12)
    kernel = torch.randn(1, 18, 9, 12)
    ref, g, rgx, rgk = reference_grads(x, kernel, 3, 1, mode, True)
    lowp = [t.to(dtype) for t in (x, kernel, g)]
    out = emu.dynamic_filter2d_forward(lowp[0], lowp[1], 3, 1, mode, True)
    gx, gk = emu.dynamic_filter2d_backward(lowp[2], lowp[0], lowp[1], 3, 1, mode, True)
    if dtype == torch.float32:
        for got, want in ((out, ref), (gx, rgx), (gk, rgk)):
            assert_close(got, want, torch.float32)
        return
    # reference run in the low dtype, for the tolerance rule
    xs, ks = leaf(lowp[0]), leaf(lowp[1])
    ref_lowp = dynamic_filter2d_reference(xs, ks, 3, 1, mode, True)
    lgx, lgk = torch.autograd.grad(ref_lowp, (xs, ks), lowp[2])
    for got, want, low in ((out, ref, ref_lowp), (gx, rgx, lgx), (gk, rgk, lgk)):
        assert got.dtype == dtype
        assert_close(got.float(), want, dtype, ref_lowp=low.float())


def test_wide_image_interior_fast_path():
    x = torch.randn(1, 2, 12, 40, dtype=torch.float64)
    kernel = torch.randn(1, 25, 12, 40, dtype=torch.float64)
    for mode in MODES:
        _, g, rgx, rgk = reference_grads(x, kernel, 5, 2, mode, True)
        gx, gk = emu.dynamic_filter2d_backward(g, x, kernel, 5, 2, mode, True)
        assert_close(gx, rgx, what=mode)
        assert_close(gk, rgk, what=mode)


@pytest.mark.parametrize("mode", MODES)
def test_nonfinite_values_stay_local(mode):
    """Issue 12: a NaN/inf pixel reaches only the outputs that read it, and a NaN kernel tap that
    reads the zero padding reaches nothing (the functors skip such taps), as the oracle says."""
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    kernel = torch.randn(1, 18, 6, 7, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 3, 3, 4] = float("nan"), float("inf")
    kernel[0, 0, 0, 0] = float("nan")  # tap (0, 0) of pixel (0, 0): reads the padding
    out = emu.dynamic_filter2d_forward(x, kernel, 3, 1, mode, False)
    assert_close(out, oracles.dynamic_filter2d(x, kernel, 3, 1, mode, False))
