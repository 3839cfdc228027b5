import os
import subprocess
import sys
import textwrap

import pytest
import torch

import oracles
from deblurfast import deform_conv2d, pixel_adaptive_conv2d
from deblurfast.ops.deform_conv2d import reference as reference_module
from deblurfast.testing import assert_close
from helpers import backend_params, grads, leaf, require_backend

BACKENDS = backend_params("deform_conv2d")

# torchvision's odd geometry: stride (2,1), pad (1,0), dilation (2,1), kernel 3x2, 2 weight groups, 3 offset groups
ODD = dict(n=2, cin=6, cout=4, h=9, w=7, kh=3, kw=2, stride=(2, 1), padding=(1, 0), dilation=(2, 1), groups=2, G=3)
PLAIN = dict(n=1, cin=4, cout=3, h=6, w=7, kh=3, kw=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, G=1)


def make(g, dtype=torch.float64, device="cpu", offsets=True, masks=True, bias=True, offset_scale=2.0):
    K = g["kh"] * g["kw"]
    ho = (g["h"] + 2 * g["padding"][0] - g["dilation"][0] * (g["kh"] - 1) - 1) // g["stride"][0] + 1
    wo = (g["w"] + 2 * g["padding"][1] - g["dilation"][1] * (g["kw"] - 1) - 1) // g["stride"][1] + 1
    kw = dict(dtype=dtype, device=device)
    x = torch.randn(g["n"], g["cin"], g["h"], g["w"], **kw)
    offset = offset_scale * torch.randn(g["n"], 2 * g["G"] * K, ho, wo, **kw) if offsets else None
    mask = torch.rand(g["n"], g["G"] * K, ho, wo, **kw) if masks else None
    weight = torch.randn(g["cout"], g["cin"] // g["groups"], g["kh"], g["kw"], **kw)
    b = torch.randn(g["cout"], **kw) if bias else None
    return x, offset, weight, b, mask


def call(backend, x, offset, weight, bias, g, mask):
    return deform_conv2d(x, offset, weight, bias, g["stride"], g["padding"], g["dilation"], mask, backend=backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("geometry", [PLAIN, ODD], ids=["plain", "odd"])
@pytest.mark.parametrize("offsets,masks", [(True, True), (True, False), (False, True), (False, False)])
def test_smoke_float64_oracle(backend, device, geometry, offsets, masks):
    require_backend("deform_conv2d", backend, device, torch.float64)
    x, offset, weight, bias, mask = make(geometry, device=device, offsets=offsets, masks=masks)
    out = call(backend, x, offset, weight, bias, geometry, mask)
    expected = oracles.deform_conv2d(x, offset, weight, bias, geometry["stride"], geometry["padding"],
                                     geometry["dilation"], mask)
    assert_close(out.cpu(), expected, what="forward")


@pytest.mark.parametrize("geometry", [PLAIN, ODD], ids=["plain", "odd"])
def test_gradcheck(geometry):
    x, offset, weight, bias, mask = make(geometry, offset_scale=1.5)
    # Keep sampling positions away from integers, where bilinear interpolation has a kink.
    fn = lambda x, o, w, b, m: call("reference", x, o, w, b, geometry, m)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(leaf(t) for t in (x, offset, weight, bias, mask)), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["empty_batch", "batch_33", "non_contiguous", "channels_last", "no_offset"])
def test_gradcheck_layouts(case):
    g = dict(PLAIN, n=0 if case == "empty_batch" else (33 if case == "batch_33" else 1), h=4, w=5, cin=2, cout=2)
    if case == "batch_33":
        g.update(h=3, w=3, kh=2, kw=2, padding=(0, 0))
    x, offset, weight, bias, mask = make(g, offsets=case != "no_offset", offset_scale=1.5)
    if case == "non_contiguous":
        x = torch.randn(g["n"], g["cin"], g["w"], g["h"], dtype=torch.float64).transpose(2, 3)
    if case == "channels_last":
        x, mask = x.to(memory_format=torch.channels_last), mask.to(memory_format=torch.channels_last)
    tensors = tuple(leaf(t) if t is not None else None for t in (x, offset, weight, bias, mask))
    fn = lambda *ts: call("reference", *ts[:4], g, ts[4])  # noqa: E731
    if case == "batch_33":  # gradcheck on 33 images is slow; compare with the oracle instead
        assert_close(fn(*tensors), oracles.deform_conv2d(x, offset, weight, bias, g["stride"], g["padding"],
                                                         g["dilation"], mask))
        return
    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6)


def test_far_offsets_contribute_nothing():
    g = PLAIN
    x, offset, weight, _, mask = make(g, bias=False)
    for far in (1e3, -1e3, 1e30):
        o = leaf(torch.full_like(offset, far))
        xs, ms, ws = leaf(x), leaf(mask), leaf(weight)
        out = call("reference", xs, o, ws, None, g, ms)
        assert torch.equal(out, torch.zeros_like(out))
        gx, go, gw, gm = grads(out, [xs, o, ws, ms])
        for t in (gx, go, gw, gm):
            assert torch.equal(t, torch.zeros_like(t))


def test_nonfinite_offsets_stay_local():
    g = PLAIN
    x, offset, weight, bias, mask = make(g)
    clean = call("reference", x, offset, weight, bias, g, mask)
    bad = offset.clone()
    bad[0, 0, 2, 3], bad[0, 5, 4, 1], bad[0, 7, 0, 0] = float("nan"), float("inf"), float("-inf")
    out = call("reference", x, bad, weight, bias, g, mask)
    touched = torch.zeros_like(out, dtype=torch.bool)
    touched[0, :, 2, 3] = touched[0, :, 4, 1] = touched[0, :, 0, 0] = True
    assert torch.equal(out[~touched], clean[~touched])
    assert torch.isfinite(out[touched]).all()  # a non-finite position reads 0, like an outside one


def test_pixel_adaptive_conv2d_is_deform_conv2d_with_a_kernel():
    g = dict(PLAIN, kh=5, kw=5, padding=(2, 2))
    x, offset, weight, bias, kernel = make(g)
    kernel = 3 * torch.randn_like(kernel)  # any real value, negative included
    for off in (None, offset):
        got = pixel_adaptive_conv2d(x, kernel, weight, bias, off, 1, 2, 1)
        assert_close(got, oracles.deform_conv2d(x, off, weight, bias, (1, 1), (2, 2), (1, 1), kernel))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_reference_runs(dtype):
    x, offset, weight, bias, mask = make(PLAIN, dtype=torch.float32)
    ref = call("reference", x.double(), offset.double(), weight.double(), bias.double(), PLAIN, mask.double())
    out = call("reference", *(t.to(dtype) for t in (x, offset, weight, bias)), PLAIN, mask.to(dtype))
    assert out.dtype == dtype
    tol = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 2e-1}[dtype]
    assert (out.double() - ref).abs().max().item() < tol * ref.abs().max().item()


def test_chunks_give_the_same_result(monkeypatch):
    g = dict(PLAIN, h=9, w=5)
    x, offset, weight, bias, mask = make(g)
    tensors = [leaf(t) for t in (x, offset, weight, bias, mask)]
    whole = call("reference", *tensors[:4], g, tensors[4])
    whole_grads = grads(whole, tensors)
    monkeypatch.setattr(reference_module, "CHUNK_ELEMENTS", 1)  # one output row per chunk, checkpointed
    tensors = [leaf(t) for t in (x, offset, weight, bias, mask)]
    chunked = call("reference", *tensors[:4], g, tensors[4])
    assert_close(chunked, whole)
    for a, b in zip(grads(chunked, tensors), whole_grads):
        assert_close(a, b)


@pytest.mark.slow
def test_reference_memory_at_720p_5x5_128_channels():
    """ops.md: the reference must stay under 4 GB peak for 1x128x720x1280, 5x5 (inference)."""
    script = textwrap.dedent(
        """
        import resource, torch, deblurfast
        torch.manual_seed(0)
        x = torch.randn(1, 128, 720, 1280)
        w = torch.randn(128, 128, 5, 5) / 60
        off = torch.randn(1, 50, 720, 1280)
        mask = torch.rand(1, 25, 720, 1280)
        with torch.no_grad():
            out = deblurfast.deform_conv2d(x, off, w, None, 1, 2, 1, mask, backend="reference")
        assert out.shape == (1, 128, 720, 1280) and torch.isfinite(out).all()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    peak = int(res.stdout.strip().splitlines()[-1])
    assert peak < 4 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("geometry", [PLAIN, ODD], ids=["plain", "odd"])
def test_equals_torchvision(geometry, device):
    torchvision = pytest.importorskip("torchvision")  # installed on the GPU machines
    x, offset, weight, bias, mask = make(geometry, device=device)
    tensors = [leaf(t) for t in (x, offset, weight, bias, mask)]
    ours = call("reference", *tensors[:4], geometry, tensors[4])
    ours_grads = grads(ours, tensors)
    tensors = [leaf(t) for t in (x, offset, weight, bias, mask)]
    theirs = torchvision.ops.deform_conv2d(
        tensors[0], tensors[1], tensors[2], tensors[3], geometry["stride"], geometry["padding"],
        geometry["dilation"], tensors[4],
    )
    assert_close(ours, theirs)
    for a, b in zip(ours_grads, grads(theirs, tensors)):
        assert_close(a, b)


def test_compile_fullgraph():
    torch._dynamo.reset()
    x, offset, weight, bias, mask = make(PLAIN, dtype=torch.float32)
    f = lambda *a: call("reference", *a[:4], PLAIN, a[4])  # noqa: E731
    assert_close(torch.compile(f, fullgraph=True)(x, offset, weight, bias, mask).double(),
                 f(x, offset, weight, bias, mask).double(), torch.float32)


def _args(**overrides):
    a = dict(
        input=torch.randn(2, 4, 6, 6),
        offset=torch.randn(2, 18, 6, 6),
        weight=torch.randn(3, 4, 3, 3),
        bias=torch.randn(3),
        stride=1,
        padding=1,
        dilation=1,
        mask=torch.rand(2, 9, 6, 6),
    )
    a.update(overrides)
    return a


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"input": torch.randn(4, 6, 6)}, ValueError, r"input must be \(N, Cin, H, W\) \(4-D\), got shape \(4, 6, 6\)"),
        ({"weight": torch.randn(3, 3, 3, 3)}, ValueError, r"Cin=4 must be a multiple of weight.shape\[1\]=3"),
        ({"weight": torch.randn(3, 2, 3, 3)}, ValueError, "Cout=3 must be divisible by groups=2"),
        ({"offset": torch.randn(2, 17, 6, 6)}, ValueError, "positive multiple of 18, got 17"),
        ({"offset": torch.randn(2, 18, 5, 6)}, ValueError, r"offset must have shape .* = \(2, 18, 6, 6\), got \(2, 18, 5, 6\)"),
        ({"offset": torch.randn(2, 54, 6, 6), "mask": torch.rand(2, 27, 6, 6)}, ValueError, "Cin=4 must be divisible by the offset groups G=3"),
        ({"mask": torch.rand(2, 18, 6, 6)}, ValueError, r"mask must have shape .* = \(2, 9, 6, 6\)"),
        ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \(Cout,\) = \(3\), got \(4\)"),
        ({"mask": torch.rand(2, 9, 6, 6, dtype=torch.float64)}, TypeError, "mask has dtype torch.float64 but input has torch.float32"),
        ({"stride": 0}, ValueError, r"stride must be >= 1, got \(0, 0\)"),
        ({"padding": (1, -1)}, ValueError, "padding must be >= 0"),
        ({"dilation": (1, 2, 3)}, TypeError, "dilation must be an int or a pair of ints"),
        ({"input": torch.randn(2, 4, 1, 1), "padding": 0}, ValueError, r"output size \(Ho, Wo\) = \(-1, -1\) is not positive"),
    ],
)
def test_exceptions(overrides, error, match):
    with pytest.raises(error, match=match):
        deform_conv2d(**_args(**overrides))


def test_exception_pixel_adaptive_names_the_kernel():
    with pytest.raises(ValueError, match=r"kernel must have shape"):
        pixel_adaptive_conv2d(torch.randn(2, 4, 6, 6), torch.randn(2, 9, 5, 6), torch.randn(3, 4, 3, 3), padding=1)
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor"):
        pixel_adaptive_conv2d(torch.randn(2, 4, 6, 6), None, torch.randn(3, 4, 3, 3), padding=1)
