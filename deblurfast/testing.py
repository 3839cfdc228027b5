"""The tolerance table of shared/specs/ops.md, in one place (tests and bench use it).

| dtype of the op     | compare against            | bound                                           |
| float64             | loop-level oracle          | |a - e| <= 1e-10 + 1e-8 |e|                     |
| float32             | reference in float64       | |a - e| <= 1e-4 + 1e-4 |e|                      |
| float16 / bfloat16  | reference in float32       | max|a - e| <= 2 x max|ref_lowp - e|, <= 5e-2 (*)|

ref_lowp is the reference itself run in the result's dtype, on the same
(already rounded) inputs; required for float16/bfloat16. Given for float32, a
result that misses the table is still accepted when its error is at most twice
the float32 reference's own (the reference can miss it too: a bilinear sample
position rounded across an integer flips the offset gradient). Tests pass it
only where they say why. A floor of two units in the last place of the largest
|e| keeps the low-precision bound meaningful when the reference happens to be
exact. The 5e-2 cap is for unit-scale values: it applies to max|e| <= 1 and
scales with max|e| beyond (a weight gradient summed over a whole image is far
larger than 1, and bfloat16 alone rounds it by more than 5e-2).
"""

from __future__ import annotations

import torch

TOLERANCES = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-4, 1e-4)}
LOW_PRECISION = (torch.float16, torch.bfloat16)
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_MAX_ABS = 5e-2


def max_abs_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def low_precision_bound(dtype: torch.dtype, expected: torch.Tensor, ref_lowp: torch.Tensor) -> float:
    """Largest max-abs error allowed for a float16/bfloat16 result."""
    scale = expected.double().abs().max().item() if expected.numel() else 0.0
    floor = 2 * torch.finfo(dtype).eps * scale
    cap = LOW_PRECISION_MAX_ABS * max(1.0, scale)
    return min(cap, max(LOW_PRECISION_FACTOR * max_abs_error(ref_lowp, expected), floor))


def check_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    ref_lowp: torch.Tensor | None = None,
) -> str | None:
    """None if `actual` (computed in `dtype`, default actual.dtype) is within the
    tolerance of `expected` (see the module doc for what `expected` must be);
    otherwise a message saying by how much it is not."""
    dtype = dtype or actual.dtype
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    if actual.numel() == 0:
        return None
    a, e = actual.double(), expected.double()
    if not torch.equal(torch.isnan(a), torch.isnan(e)):
        return "NaN positions differ"
    inf = torch.isinf(e)
    if not torch.equal(a[inf], e[inf]) or torch.isinf(a[~inf]).any():
        return "infinite values differ"
    finite = torch.isfinite(e)
    a, e = a[finite], e[finite]
    if ref_lowp is not None:
        ref_lowp = ref_lowp.double()[finite]
    if dtype in TOLERANCES:
        atol, rtol = TOLERANCES[dtype]
        excess = (a - e).abs() - (atol + rtol * e.abs())
        if excess.numel() and excess.max().item() > 0:
            # A float32 result may miss the table where the reference itself does (a sample position
            # rounded across an integer flips a bilinear gradient): then no worse than 2x its error.
            if ref_lowp is not None and dtype == torch.float32 and \
                    max_abs_error(a, e) <= LOW_PRECISION_FACTOR * max_abs_error(ref_lowp, e):
                return None
            i = excess.argmax()
            return (
                f"{dtype}: max error {max_abs_error(a, e):.3g}; worst element {a[i].item():.10g} vs "
                f"{e[i].item():.10g} exceeds atol {atol} + rtol {rtol}"
            )
        return None
    if dtype in LOW_PRECISION:
        if ref_lowp is None:
            raise ValueError("float16/bfloat16 results need ref_lowp, the reference run in that dtype")
        bound = low_precision_bound(dtype, e, ref_lowp)
        err = max_abs_error(a, e)
        if err > bound:
            return (
                f"{dtype}: max error {err:.3g} > bound {bound:.3g} (2x the reference's own "
                f"{max_abs_error(ref_lowp, e):.3g}, at most {LOW_PRECISION_MAX_ABS} x max(1, max|expected|))"
            )
        return None
    raise ValueError(f"no tolerance for dtype {dtype}")


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    ref_lowp: torch.Tensor | None = None,
    what: str = "",
) -> None:
    """Raises AssertionError with check_close's message."""
    msg = check_close(actual, expected, dtype, ref_lowp)
    if msg is not None:
        raise AssertionError(f"{what}: {msg}" if what else msg)
