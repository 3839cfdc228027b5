"""The shared tolerance table (deblurfast.testing) must catch what it is meant to catch."""

import pytest
import torch

from deblurfast.testing import check_close


def t(*v, dtype=torch.float64):
    return torch.tensor(v, dtype=dtype)


def test_float32_table():
    e = t(1.0, -2.0, 1000.0)
    assert check_close(e.float() + 5e-5, e) is None  # within atol 1e-4 + rtol 1e-4 |e|
    assert check_close(t(1.0, -2.0, 1000.2, dtype=torch.float32), e) is not None  # 0.2 > 1e-4 + 0.1
    assert check_close(t(1.0, -2.0, dtype=torch.float32), e) is not None  # shape


def test_nonfinite_values_must_match_exactly():
    e = t(float("inf"), 1.0, 2.0)
    assert check_close(t(float("inf"), 1.0, 2.0), e) is None
    assert check_close(t(float("inf"), 5.0, -7.0), e) is not None  # an inf must not hide the rest
    assert check_close(t(float("-inf"), 1.0, 2.0), e) == "infinite values differ"
    assert check_close(t(1.0, float("inf"), 2.0), t(1.0, 1.0, 2.0)) == "infinite values differ"
    assert check_close(t(float("nan"), 1.0), t(0.0, 1.0)) == "NaN positions differ"
    assert check_close(t(float("nan"), 1.0), t(float("nan"), 1.0)) is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_relative_to_the_reference_own_error(dtype):
    e = torch.linspace(-1, 1, 101, dtype=torch.float64)
    ref_lowp = e.to(dtype)  # the reference in that dtype: its own error is the rounding of e
    assert check_close(ref_lowp, e, dtype, ref_lowp) is None
    # the bound: 2x the reference's own error, floored at 2 ulp of max|e| (1 here), capped at 5e-2
    bound = max(2 * (ref_lowp.double() - e).abs().max().item(), 2 * torch.finfo(dtype).eps)
    assert check_close(e + 0.9 * bound, e, dtype, ref_lowp) is None
    assert check_close(e + 1.1 * bound, e, dtype, ref_lowp) is not None
    assert check_close(e + 0.06, e, dtype, ref_lowp=e + 0.05) is not None  # the 5e-2 cap
    with pytest.raises(ValueError, match="ref_lowp"):
        check_close(ref_lowp, e, dtype)
