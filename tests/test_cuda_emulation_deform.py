"""deblurfast's CUDA deform_conv2d kernels (csrc/cuda/deform_conv2d.cuh), run on
the CPU through the emulation (tests/cuda_emulation): forward and every
gradient against the loop-level oracle and the reference's autograd."""

import itertools

import pytest
import torch

import cuda_emulator as emu
import oracles
from deblurfast.ops.deform_conv2d import deform_conv2d_reference
from deblurfast.testing import assert_close
from geometries import CONV, FIVE, GENERIC, ODD, PLAIN, WIDE, deform_inputs, out_size
from helpers import leaf

# The kernels index images: the plain geometry with a batch of two.
GEOMETRIES = {"odd": ODD, "plain": dict(PLAIN, n=2), "five": FIVE, "wide": WIDE, "generic": GENERIC}
NAMES = ("grad_input", "grad_offset", "grad_weight", "grad_bias", "grad_mask")


def make(g, dtype=torch.float64, **kw):
    """The geometry's tensors from a fixed generator, with any real mask (the op applies no sigmoid)."""
    return deform_inputs(g, dtype, generator=torch.Generator().manual_seed(0), signed_mask=True, **kw)


def conv_args(g):
    return {k: g[k] for k in CONV}


def reference(tensors, g, seed=3):
    """Reference forward and its autograd gradients (None for an absent tensor) for a fixed random grad_out."""
    leaves = [leaf(t) if t is not None else None for t in tensors]
    x, offset, weight, bias, mask = leaves
    out = deform_conv2d_reference(x, offset, weight, bias, g["stride"], g["padding"], g["dilation"], mask)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.dtype)
    present = [t for t in leaves if t is not None]
    got = iter(torch.autograd.grad(out, present, go, allow_unused=True)) if present and out.numel() else None
    grads = []
    for t in leaves:
        if t is None:
            grads.append(None)
        elif got is None:
            grads.append(torch.zeros_like(t))
        else:
            gr = next(got)
            grads.append(gr if gr is not None else torch.zeros_like(t))
    return out.detach(), go, grads


def emulate_all(tensors, go, g, **kw):
    out = emu.deform_conv2d_forward(*tensors, **conv_args(g), min_items=kw.get("min_items", 1))
    grads = emu.deform_conv2d_backward(go, *tensors, **conv_args(g), **kw)
    return out, grads


def check_grads(got, want, dtype=None, lowp=None):
    for i, (name, a, e) in enumerate(zip(NAMES, got, want)):
        if e is None:
            assert a.numel() == 0, f"{name}: absent tensor must give an empty gradient"
            continue
        assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        if lowp is None:
            assert_close(a.double() if dtype else a, e, dtype, what=name)
        else:
            assert_close(a.float(), e, dtype, ref_lowp=lowp[i].float(), what=name)


# -- float64 against the oracle and the reference's gradients ---------------------------------------


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize(
    "offsets,masks,bias", [(True, True, True), (True, False, False), (False, True, True), (False, False, False)],
    ids=["all", "no_mask_no_bias", "no_offset", "plain_conv"],
)
@pytest.mark.parametrize("split", ["big_gpu", "small_gpu"])
def test_float64_against_oracle_and_reference(geometry, offsets, masks, bias, split):
    g = GEOMETRIES[geometry]
    tensors = make(g, offsets=offsets, masks=masks, bias=bias)
    # big_gpu: images too small to fill the device (8-channel output blocks, many weight-gradient chunks of
    # a few pixels, chunk edges inside rows and across images); small_gpu: 16-channel blocks, one chunk.
    kw = dict(min_items=10**9, min_chunk_pixels=7) if split == "big_gpu" else dict(min_items=1)
    ref, go, want = reference(tensors, g)
    out, got = emulate_all(tensors, go, g, **kw)
    assert_close(out, oracles.deform_conv2d(*tensors[:4], g["stride"], g["padding"], g["dilation"], tensors[4]),
                 what="forward vs oracle")
    assert_close(out, ref, what="forward vs reference")
    check_grads(got, want)


def test_splits_really_differ():
    """The parametrization above exercises several chunks and both output-channel blocks."""
    x, offset, weight, bias, mask = make(WIDE)
    args = (x, offset, weight, bias, mask, WIDE["stride"], WIDE["padding"], WIDE["dilation"])
    assert emu.deform_conv2d_chunks(*args, min_items=10**9, min_chunk_pixels=7) >= 5
    assert emu.deform_conv2d_chunks(*args, min_items=1) == 1
    # the weight gradient does not depend on the split beyond rounding
    go = torch.randn(1, 18, *out_size(WIDE), dtype=torch.float64)
    one = emu.deform_conv2d_backward(go, *args[:5], **conv_args(WIDE), min_items=1)
    many = emu.deform_conv2d_backward(go, *args[:5], **conv_args(WIDE), min_items=10**9, min_chunk_pixels=3)
    for a, b, name in zip(one, many, NAMES):
        assert_close(a, b, what=name)


@pytest.mark.parametrize("n", [0, 2])
def test_batch_sizes(n):
    g = dict(ODD, n=n)
    tensors = make(g)
    ref, go, want = reference(tensors, g)
    out, got = emulate_all(tensors, go, g)
    assert out.shape == ref.shape
    assert_close(out, ref, what="forward")
    check_grads(got, want)
    if n == 0:  # no pixels: weight and bias gradients are fully written zeros
        assert torch.equal(got[2], torch.zeros_like(got[2])) and torch.equal(got[3], torch.zeros_like(got[3]))


def test_integer_offsets_equal_no_offset():
    """Zero offsets sample the grid points: the bilinear path equals the offset=None path."""
    g = dict(PLAIN, n=2)
    x, offset, weight, bias, mask = make(g)
    zeros = torch.zeros_like(offset)
    a = emu.deform_conv2d_forward(x, zeros, weight, bias, mask, **conv_args(g))
    b = emu.deform_conv2d_forward(x, None, weight, bias, mask, **conv_args(g))
    assert_close(a, b)


# -- output_mask -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])  # float16: grad_input via the workspace
def test_every_output_mask(dtype):
    g = ODD
    tensors = make(g, dtype)
    _, go, _ = reference(tensors, g)
    full = emu.deform_conv2d_backward(go, *tensors, **conv_args(g))
    for output_mask in itertools.product([False, True], repeat=5):
        got = emu.deform_conv2d_backward(go, *tensors, **conv_args(g), output_mask=output_mask)
        for name, wanted, a, b in zip(NAMES, output_mask, got, full):
            if wanted:
                assert torch.equal(a, b), f"{name} differs when computed with output_mask {output_mask}"
            else:
                assert a.numel() == 0, f"{name} not requested but returned {tuple(a.shape)}"


def test_absent_tensors_give_empty_gradients():
    g = dict(PLAIN, n=2)
    x, _, weight, _, _ = make(g)
    go = torch.randn(g["n"], g["cout"], *out_size(g), dtype=torch.float64)
    gi, goff, gw, gb, gm = emu.deform_conv2d_backward(go, x, None, weight, None, None, **conv_args(g))
    assert goff.numel() == 0 and gb.numel() == 0 and gm.numel() == 0
    assert gi.shape == x.shape and gw.shape == weight.shape


# -- low precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("geometry", ["plain16", "odd"])
@pytest.mark.parametrize("offsets", [True, False], ids=["offset", "no_offset"])
def test_low_precision(dtype, geometry, offsets):
    g = dict(PLAIN, cin=16, cout=16, h=12, w=10) if geometry == "plain16" else ODD
    fan_in = g["cin"] // g["groups"] * g["kh"] * g["kw"]
    x, offset, weight, bias, mask = make(g, torch.float32, offsets=offsets, offset_scale=1.0)
    mask = torch.rand(mask.shape, generator=torch.Generator().manual_seed(5))
    # A network's scale, so values are O(1); rounded to the low dtype first so every side samples the
    # same positions (an offset rounded across an integer moves the bilinear kink).
    lowp = [t.to(dtype) if t is not None else None for t in (x, offset, weight / fan_in**0.5, bias, mask)]
    ref, go64, want = reference([t.double() if t is not None else None for t in lowp], g)
    go = go64.to(dtype)
    out, got = emulate_all(lowp, go, g, min_items=1)
    assert out.dtype == dtype and all(t.dtype == dtype for t in got)
    if dtype == torch.float32:
        assert_close(out, ref, torch.float32, what="forward")
        check_grads(got, want, torch.float32)
        return
    ref_lowp, _, want_lowp = reference(lowp, g)  # the reference itself in the low dtype, same grad_out
    assert_close(out.float(), ref, dtype, ref_lowp=ref_lowp.float(), what="forward")
    check_grads(got, want, dtype, lowp=want_lowp)


# -- edges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("far", [1e3, -1e3, 1e30, -1e30, float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_offsets_contribute_nothing(far, dtype):
    g = ODD
    x, offset, weight, _, mask = make(g, dtype)
    offset = torch.full_like(offset, far)
    go = torch.randn(g["n"], g["cout"], *out_size(g), dtype=dtype)
    out = emu.deform_conv2d_forward(x, offset, weight, None, mask, **conv_args(g))
    assert torch.equal(out, torch.zeros_like(out))
    for name, t in zip(NAMES, emu.deform_conv2d_backward(go, x, offset, weight, None, mask, **conv_args(g))):
        assert torch.equal(t, torch.zeros_like(t)), name


def test_offsets_just_outside_and_on_the_border():
    """Positions at exactly -1 / H read 0; just inside they blend the border pixel with zeros."""
    g = dict(PLAIN, n=1, h=4, w=5, kh=1, kw=1, padding=(0, 0))
    x, _, weight, _, mask = make(g)
    ho, wo = out_size(g)
    grid_y = torch.arange(ho, dtype=torch.float64)[:, None].expand(ho, wo)
    grid_x = torch.arange(wo, dtype=torch.float64)[None, :].expand(ho, wo)
    for ty, tx in [(-1.0, 0.0), (4.0, 2.0), (-0.999, 1.5), (3.999, -0.25), (1.0, 4.0), (2.5, -1.0), (0.0, 0.0)]:
        offset = torch.stack([ty - grid_y, tx - grid_x])[None].clone()
        tensors = (x, offset, weight, None, mask)
        ref, go, want = reference(tensors, g)
        out, got = emulate_all(tensors, go, g)
        assert_close(out, oracles.deform_conv2d(x, offset, weight, None, (1, 1), (0, 0), (1, 1), mask))
        assert_close(out, ref)
        check_grads(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_offsets_stay_local(dtype):
    """A NaN / inf offset reads 0 (no out-of-bounds read: the emulation reads host memory, where an OOB
    read shows as garbage or a crash); only that pixel's outputs and that tap's offset/mask gradients change."""
    g = dict(PLAIN, n=2)
    x, offset, weight, bias, mask = make(g, dtype)
    go = torch.randn(g["n"], g["cout"], *out_size(g), dtype=dtype)
    clean = emu.deform_conv2d_forward(x, offset, weight, bias, mask, **conv_args(g))
    clean_grads = emu.deform_conv2d_backward(go, x, offset, weight, bias, mask, **conv_args(g))
    bad = offset.clone()
    # (n, channel, y, x): dy of tap 0, dx of tap 2, dy of tap 3 / dx of tap 3
    poisoned = [(0, 0, 2, 3, float("nan")), (1, 5, 4, 1, float("inf")), (0, 7, 0, 0, float("-inf")),
                (1, 6, 5, 6, float("nan"))]
    for n, c, y, xx, v in poisoned:
        bad[n, c, y, xx] = v
    out = emu.deform_conv2d_forward(x, bad, weight, bias, mask, **conv_args(g))
    touched = torch.zeros_like(out, dtype=torch.bool)
    for n, _, y, xx, _ in poisoned:
        touched[n, :, y, xx] = True
    assert torch.isfinite(out).all()
    assert torch.equal(out[~touched], clean[~touched])
    assert not torch.equal(out[touched], clean[touched])
    gi, goff, gw, gb, gm = emu.deform_conv2d_backward(go, x, bad, weight, bias, mask, **conv_args(g))
    for name, t in zip(NAMES, (gi, goff, gw, gb, gm)):
        assert torch.isfinite(t).all(), name
    tap_touched = torch.zeros_like(gm, dtype=torch.bool)
    for n, c, y, xx, _ in poisoned:
        tap_touched[n, c // 2, y, xx] = True
    off_touched = tap_touched.repeat_interleave(2, dim=1)
    assert torch.equal(gm[~tap_touched], clean_grads[4][~tap_touched])
    assert torch.equal(gm[tap_touched], torch.zeros_like(gm[tap_touched]))  # sample 0: no mask gradient
    assert torch.equal(goff[~off_touched], clean_grads[1][~off_touched])
    assert torch.equal(goff[off_touched], torch.zeros_like(goff[off_touched]))
    assert torch.equal(gb, clean_grads[3])
    # and the same as the reference, whose NaN position is outside too
    ref, go, want = reference((x, bad, weight, bias, mask), g)
    assert_close(out.double(), ref, dtype, what="forward")
    if dtype == torch.float64:
        check_grads(emu.deform_conv2d_backward(go, x, bad, weight, bias, mask, **conv_args(g)), want)


def test_inf_input_reaches_only_its_samples():
    g = dict(PLAIN, n=2, padding=(0, 0))
    x, _, weight, bias, mask = make(g)
    x[0, :, 3, 3] = float("inf")
    out = emu.deform_conv2d_forward(x, None, weight, bias, mask, **conv_args(g))
    assert torch.isfinite(out[0, :, 0, 0]).all() and torch.isfinite(out[1]).all()
    assert not torch.isfinite(out[0, :, 1, 1]).all()


@pytest.mark.parametrize("offsets", [True, False])
def test_nonfinite_input_matches_the_oracle(offsets):
    """Issue 12: a NaN/inf pixel reaches exactly the outputs that sample it (no outside corner
    reads it), at a corner, an edge and inside, as the oracle says."""
    g = dict(ODD, n=1)
    x, offset, weight, bias, mask = make(g)
    mask = mask.abs()  # finite, nonzero: the functors skip a tap that reads nothing, so mask * 0 never shows
    offset = offset.round() + torch.rand(offset.shape, dtype=torch.float64) * 0.8 + 0.1 if offsets else None
    x[0, 0, 0, 0], x[0, 0, 1, 0], x[0, 1, 7, 6] = float("nan"), float("nan"), float("inf")
    x[0, 4, 3, 3], x[0, 5, 1, 6] = float("-inf"), float("nan")
    out = emu.deform_conv2d_forward(x, offset, weight, bias, mask, **conv_args(g))
    expected = oracles.deform_conv2d(x, offset, weight, bias, g["stride"], g["padding"], g["dilation"], mask)
    assert expected.isnan().any() and expected.isinf().any()
    assert_close(out, expected)
