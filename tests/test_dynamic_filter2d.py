import numpy as np
import pytest
import torch

import oracles
from deblurfast import BackendError, dynamic_filter2d, use_backend
from deblurfast.nn import DynamicFilter2d
from deblurfast.ops.dynamic_filter2d import OP, dynamic_filter2d_reference
from deblurfast.testing import assert_close
from helpers import backend_params, check_double_backward, grads, leaf, require_backend, uninitialized_is_nan
from op_contract import OpContract

BACKENDS = backend_params("dynamic_filter2d")
MODES = ("zeros", "reflect", "replicate")
# (kernel_size, dilation, groups): odd sizes up to 7, dilation, grouped kernels, a 1x1 kernel
GEOMETRIES = [(3, 1, 1), (3, 2, 2), (5, 1, 1), (7, 1, 2), (1, 1, 3)]


def make(n, c, h, w, k, groups, dtype=torch.float64, device="cpu", scale=1.0):
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    kernel = scale * torch.randn(n, groups * k * k, h, w, dtype=dtype, device=device)
    return x, kernel


class TestDynamicFilter2dContract(OpContract):
    op = "dynamic_filter2d"
    geometry = dict(n=2, c=4, h=6, w=9, k=3, d=1, groups=2, mode="reflect", normalize="softmax", scale=1.0)
    layout_geometries = {"empty_batch": dict(geometry, n=0), "no_channels": dict(geometry, c=0, groups=1),
                         "huge_logits": dict(geometry, scale=1e4)}
    low_precision_geometries = {"k3": dict(geometry, c=8, h=12, w=20), "k7": dict(geometry, c=8, h=12, w=20, k=7)}
    opcheck_geometries = {"reflect-softmax": geometry, "zeros": dict(geometry, mode="zeros", normalize=None)}

    def make(self, g, dtype, device):
        x, kernel = make(g["n"], g["c"], g["h"], g["w"], g["k"], g["groups"], dtype, device, g["scale"])
        return {"input": x, "kernel": kernel}

    def call(self, backend, g, t):
        return dynamic_filter2d(t["input"], t["kernel"], g["k"], g["d"], g["mode"], g["normalize"], backend=backend)


def run_with_grads(backend, x, kernel, k, d, mode, normalize):
    x, kernel = leaf(x), leaf(kernel)
    out = dynamic_filter2d(x, kernel, k, d, mode, normalize, backend=backend)
    gx, gk = grads(out, [x, kernel])
    return out, gx, gk


# -- smoke: every backend against the loop-level float64 oracle ----------------


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [None, "softmax"])
@pytest.mark.parametrize("k,d,groups", GEOMETRIES)
def test_smoke_float64_oracle(backend, device, mode, normalize, k, d, groups):
    require_backend("dynamic_filter2d", backend, device, torch.float64)
    x, kernel = make(2, 6, 5, 7, k, groups, device=device)
    with uninitialized_is_nan():
        out, gx, gk = run_with_grads(backend, x, kernel, k, d, mode, normalize)
    expected = oracles.dynamic_filter2d(x, kernel, k, d, mode, normalize == "softmax")
    assert_close(out.cpu(), expected, what="forward")
    # Backward against the reference's autograd (itself gradchecked below) in float64.
    _, rgx, rgk = run_with_grads("reference", x.cpu(), kernel.cpu(), k, d, mode, normalize)
    assert_close(gx.cpu(), rgx, what="grad_input")
    assert_close(gk.cpu(), rgk, what="grad_kernel")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_wide_rows_take_interior_and_border_paths(backend, device, mode):
    # Wide enough that kernels split rows into interior blocks (fast path) and border blocks.
    require_backend("dynamic_filter2d", backend, device, torch.float64)
    x, kernel = make(1, 3, 6, 150, 3, 1, device=device)
    out, gx, gk = run_with_grads(backend, x, kernel, 3, 1, mode, "softmax")
    ref = run_with_grads("reference", x.cpu(), kernel.cpu(), 3, 1, mode, "softmax")
    for got, want, what in zip((out, gx, gk), ref, ("forward", "grad_input", "grad_kernel")):
        assert_close(got.cpu(), want, what=what)


# -- the Triton NCHW forward by rows: whole chunks of 8 pixels, moved in registers per tap ----------------

TRITON_DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", marks=pytest.mark.cuda, id="cuda")]


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape,k,d,groups",
    [((1, 3, 5, 8), 3, 1, 1), ((1, 3, 5, 8), 7, 1, 1), ((2, 4, 3, 24), 3, 1, 1), ((2, 4, 3, 24), 5, 1, 2),
     ((2, 4, 3, 24), 3, 3, 1), ((2, 4, 3, 24), 1, 1, 1), ((1, 2, 4, 136), 3, 1, 1)],
    ids=["w8-k3", "w8-k7", "w24-k3", "w24-k5-g2", "w24-k3-d3", "w24-k1", "w136-k3"],
)
def test_triton_rows_kernel(device, mode, shape, k, d, groups):
    """Rows of whole 8-pixel chunks run dynamic_filter2d_fwd_rows_kernel: one chunk, several, and blocks of 64
    columns with a partial last one; each tap's samples are a chunk moved by the tap's column offset, with the
    chunk's neighbours padded as the mode pads (reflected, replicated or zero, and a zero-padding tap unused)."""
    pytest.importorskip("triton")
    from deblurfast.kernels.dynamic_filter2d import by_rows

    require_backend("dynamic_filter2d", "triton", device, torch.float64)
    n, c, h, w = shape
    if mode == "reflect" and d * (k - 1) // 2 >= min(h, w):
        pytest.skip("reflect padding must be smaller than the image")
    x, kernel = make(n, c * groups, h, w, k, groups, device=device)
    assert by_rows(x, kernel, x, k, d)
    for normalize in (None, "softmax"):
        out = dynamic_filter2d(x, kernel, k, d, mode, normalize, backend="triton")
        assert_close(out.cpu(), oracles.dynamic_filter2d(x.cpu(), kernel.cpu(), k, d, mode, normalize == "softmax"),
                     what=f"forward, {normalize}")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_rows_kernel_low_precision(device, dtype):
    pytest.importorskip("triton")
    require_backend("dynamic_filter2d", "triton", device, dtype)
    x, kernel = (t.to(dtype) for t in make(1, 8, 6, 72, 3, 2, device=device))
    out = dynamic_filter2d(x, kernel, 3, 1, "reflect", "softmax", backend="triton")
    lowp = dynamic_filter2d(x.cpu(), kernel.cpu(), 3, 1, "reflect", "softmax", backend="reference")
    want = oracles.dynamic_filter2d(x.double().cpu(), kernel.double().cpu(), 3, 1, "reflect", True)
    assert out.dtype == dtype
    assert_close(out.cpu(), want, dtype, ref_lowp=lowp, what=str(dtype))


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_rows_kernel_keeps_nonfinite_values_local(device):
    """As test_nonfinite_values_stay_local, on rows of whole chunks: a NaN tap at a chunk's edge that reads
    the zero padding reaches nothing; a NaN sample reaches the chunks beside it through their neighbours."""
    pytest.importorskip("triton")
    require_backend("dynamic_filter2d", "triton", device, torch.float64)
    x, kernel = make(1, 2, 4, 16, 3, 1)
    x[0, 0, 1, 7] = float("nan")  # the last pixel of chunk 0: chunk 1's left neighbour
    x[0, 1, 2, 8] = float("inf")  # the first of chunk 1
    kernel[0, 0, 0, 0] = float("nan")  # tap (0, 0) at (0, 0): reads the padding
    kernel[0, 5, 3, 15] = float("nan")  # tap (1, 2) at (3, 15): reads column 16, past the image
    for mode in MODES:
        expected = oracles.dynamic_filter2d(x, kernel, 3, 1, mode, False)
        assert expected.isnan().any() and torch.isfinite(expected).any()
        out = dynamic_filter2d(x.to(device), kernel.to(device), 3, 1, mode, backend="triton")
        assert_close(out.cpu(), expected, what=mode)


def test_triton_rows_kernel_is_chosen_only_where_it_applies():
    pytest.importorskip("triton")
    from deblurfast.kernels.dynamic_filter2d import by_rows

    x, kernel = make(1, 4, 5, 16, 3, 1)
    assert by_rows(x, kernel, x, 3, 1)
    assert by_rows(x, kernel, x, 3, 3) and not by_rows(x, kernel, x, 3, 4)  # column offsets up to 3 a side
    assert not by_rows(x[..., :12], kernel[..., :12], x[..., :12], 3, 1)  # 12 columns: a partial chunk
    cl = x.contiguous(memory_format=torch.channels_last)
    assert not by_rows(cl, kernel, cl, 3, 1)
    x2, kernel2 = make(1, 4, 16, 5, 3, 1)  # a transposed image: its rows are strided
    assert not by_rows(x2.transpose(2, 3), kernel2.transpose(2, 3), x2.transpose(2, 3), 3, 1)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize(
    "shape,k,d,mode",
    [
        ((1, 1, 1, 1), 3, 1, "zeros"),  # a 1x1 image
        ((1, 2, 1, 9), 3, 1, "replicate"),  # one row
        ((2, 3, 9, 1), 5, 1, "zeros"),  # one column, kernel wider than the image
        ((3, 4, 4, 4), 7, 1, "replicate"),  # padding wider than the image
        ((2, 2, 3, 3), 3, 1, "reflect"),  # the widest legal reflection (pad = H - 1)
        ((1, 3, 8, 5), 3, 3, "reflect"),  # dilated reflection, 3 preimages per border pixel
    ],
)
def test_smoke_odd_shapes(backend, device, shape, k, d, mode):
    require_backend("dynamic_filter2d", backend, device, torch.float64)
    n, c, h, w = shape
    x, kernel = make(n, c, h, w, k, 1, device=device)
    if mode == "reflect" and d * (k - 1) // 2 >= min(h, w):
        pytest.skip("reflect padding must be smaller than the image")
    out, gx, gk = run_with_grads(backend, x, kernel, k, d, mode, "softmax")
    assert_close(out.cpu(), oracles.dynamic_filter2d(x, kernel, k, d, mode, True), what="forward")
    _, rgx, rgk = run_with_grads("reference", x.cpu(), kernel.cpu(), k, d, mode, "softmax")
    assert_close(gx.cpu(), rgx, what="grad_input")
    assert_close(gk.cpu(), rgk, what="grad_kernel")


# -- gradcheck ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize(
    "case", ["plain", "dilation2_groups2", "k5_replicate", "zeros", "empty_batch", "non_contiguous", "channels_last"]
)
def test_gradcheck(backend, case):
    require_backend("dynamic_filter2d", backend, "cpu", torch.float64)
    n, c, h, w, k, d, groups, mode = 2, 2, 4, 5, 3, 1, 1, "reflect"
    if case == "dilation2_groups2":
        c, d, groups, h, w = 4, 2, 2, 5, 6
    if case == "k5_replicate":
        k, mode = 5, "replicate"
    if case == "zeros":
        mode = "zeros"
    if case == "empty_batch":
        n = 0
    x, kernel = make(n, c, h, w, k, groups)
    if case == "non_contiguous":
        x = torch.randn(n, c, w, h, dtype=torch.float64).transpose(2, 3)
    if case == "channels_last":
        x, kernel = x.to(memory_format=torch.channels_last), kernel.to(memory_format=torch.channels_last)
    for normalize in (None, "softmax"):
        fn = lambda x, kernel: dynamic_filter2d(x, kernel, k, d, mode, normalize, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (leaf(x), leaf(kernel)), eps=1e-6, atol=1e-7)


# -- second-order gradients (issue 12, item 1) ------------------------------------


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode,normalize", [("reflect", "softmax"), ("zeros", None), ("replicate", "softmax")])
def test_double_backward(backend, device, mode, normalize):
    """Every backend differentiates its gradients (the cpu one gave zero second-order gradients)."""
    x, kernel = make(1, 2, 3, 4, 3, 1)
    check_double_backward("dynamic_filter2d", backend, device,
                          lambda be, x, k: dynamic_filter2d(x, k, 3, 1, mode, normalize, backend=be), (x, kernel))


# -- non-finite values and extreme arguments (issue 12, items 2 and 7) ------------


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_nonfinite_values_stay_local(backend, device, mode):
    """A NaN/inf pixel reaches only the outputs that read it; a NaN kernel tap that reads the zero
    padding reaches nothing (the tap is not read: the reference and Triton multiplied it by 0)."""
    require_backend("dynamic_filter2d", backend, device, torch.float64)
    x, kernel = make(1, 4, 6, 7, 3, 2)
    x[0, 0, 0, 0], x[0, 3, 3, 4] = float("nan"), float("inf")
    kernel[0, 0, 0, 0] = float("nan")  # tap (0, 0) of pixel (0, 0) of group 0: reads the padding
    kernel[0, 9 + 4, 5, 6] = float("-inf")  # the centre tap of group 1 at (5, 6)
    expected = oracles.dynamic_filter2d(x, kernel, 3, 1, mode, False)
    assert expected.isnan().any() and torch.isfinite(expected).any()
    out = dynamic_filter2d(x.to(device), kernel.to(device), 3, 1, mode, backend=backend)
    assert_close(out.cpu(), expected)  # NaN and inf positions equal, the rest close


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_huge_dilation(backend, device, mode):
    """dilation 2**31: the reference built a padded copy of 2**32 columns ("Storage size calculation
    overflowed"). It now reads only the image (a tap beyond it reads zero, or the replicated edge);
    a kernel that cannot index that far refuses, naming its limit."""
    require_backend("dynamic_filter2d", backend, device, torch.float64)
    x, kernel = make(1, 2, 4, 5, 3, 1)
    expected = oracles.dynamic_filter2d(x, kernel, 3, 2**31, mode, False)
    try:
        out, gx, gk = run_with_grads(backend, x.to(device), kernel.to(device), 3, 2**31, mode, None)
    except BackendError as e:
        assert backend != "reference"
        assert "needs 64-bit positions" in str(e) or "replicate padding 2147483648 > max(H, W)" in str(e)
        return
    assert_close(out.cpu(), expected)
    _, want_x, want_k = run_with_grads("reference", x, kernel, 3, 2**31, mode, None)
    assert_close(gx.cpu(), want_x)
    assert_close(gk.cpu(), want_k)


def test_dilation_beyond_int64_is_refused():
    with pytest.raises(ValueError, match=r"padded size max\(H, W\) \+ dilation\*\(kernel_size-1\) = \d+ does not fit"):
        dynamic_filter2d(**_bad(dilation=2**62, padding_mode="zeros"))


def test_integral_scalars_are_accepted():
    x, kernel = make(1, 2, 5, 6, 3, 1)
    expected = dynamic_filter2d(x, kernel, 3, 2, "zeros")
    for k, d in ((np.int64(3), np.int32(2)), (torch.tensor(3), torch.tensor(2))):
        assert torch.equal(dynamic_filter2d(x, kernel, k, d, "zeros"), expected)
    assert DynamicFilter2d(np.int64(3), torch.tensor(2)).kernel_size == 3


def test_compile_follows_use_backend():
    torch._dynamo.reset()
    x, kernel = make(1, 2, 4, 5, 3, 1, torch.float32)
    compiled = torch.compile(lambda x, k: dynamic_filter2d(x, k, normalize="softmax"), fullgraph=True)
    expected = dynamic_filter2d_reference(x, kernel, softmax=True)
    with use_backend("reference"):
        assert_close(compiled(x, kernel).double(), expected.double(), torch.float32)
    # An impossible request inside the block must reach the compiled code too.
    with use_backend("cuda"), pytest.raises(Exception, match="no backend can run"):
        compiled(x, kernel)


@pytest.mark.cuda
def test_cuda_and_triton_agree():
    for backend in ("cuda", "triton"):
        require_backend("dynamic_filter2d", backend, "cuda", torch.float16)
    x, kernel = make(2, 32, 45, 80, 5, 4, torch.float16, "cuda")
    a = run_with_grads("cuda", x, kernel, 5, 1, "reflect", "softmax")
    b = run_with_grads("triton", x, kernel, 5, 1, "reflect", "softmax")
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=2e-2, rtol=2e-2)


# -- exceptions ------------------------------------------------------------------


def _bad(**overrides):
    args = {
        "input": torch.randn(2, 4, 5, 6),
        "kernel": torch.randn(2, 9, 5, 6),
        "kernel_size": 3,
        "dilation": 1,
        "padding_mode": "reflect",
        "normalize": None,
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"input": torch.randn(4, 5, 6)}, ValueError, r"input must be \(N, C, H, W\) \(4-D\), got shape \(4, 5, 6\)"),
        ({"kernel": torch.randn(2, 9, 5)}, ValueError, r"kernel must be .*got shape \(2, 9, 5\)"),
        ({"input": [1.0]}, TypeError, "input must be a torch.Tensor"),
        ({"input": torch.zeros(2, 4, 5, 6, dtype=torch.int32)}, TypeError, "input must be float32.*got torch.int32"),
        ({"kernel": torch.randn(2, 9, 5, 6, dtype=torch.float64)}, TypeError, "kernel has dtype torch.float64"),
        ({"kernel": torch.randn(2, 10, 5, 6)}, ValueError, "positive multiple|G\\*k\\*k channels.*got 10"),
        ({"kernel": torch.randn(2, 27, 5, 6)}, ValueError, "C=4 must be divisible by the kernel's groups G=3"),
        ({"kernel": torch.randn(3, 9, 5, 6)}, ValueError, r"kernel must have shape .* = \(2, 9, 5, 6\), got \(3, 9, 5, 6\)"),
        ({"kernel": torch.randn(2, 9, 5, 7)}, ValueError, r"got \(2, 9, 5, 7\)"),
        ({"kernel_size": 2, "kernel": torch.randn(2, 4, 5, 6)}, ValueError, "kernel_size must be a positive odd int, got 2"),
        ({"dilation": 0}, ValueError, "dilation must be an int >= 1, got 0"),
        ({"kernel_size": True, "kernel": torch.randn(2, 4, 5, 6)}, ValueError, "kernel_size must be .* got True"),
        ({"dilation": True}, ValueError, "dilation must be an int >= 1, got True"),
        ({"padding_mode": "circular"}, ValueError, "padding_mode must be one of .* got 'circular'"),
        ({"normalize": "sigmoid"}, ValueError, "normalize must be None or 'softmax', got 'sigmoid'"),
        ({"dilation": 5}, ValueError, r"reflect padding .* = 5 must be smaller .* H=5, W=6"),
        (
            {"input": torch.randn(2, 4, 2, 6), "kernel": torch.randn(2, 25, 2, 6), "kernel_size": 5},
            ValueError,
            "reflect padding",
        ),
    ],
)
def test_exceptions(overrides, error, match):
    with pytest.raises(error, match=match) as info:
        dynamic_filter2d(**_bad(**overrides))
    assert isinstance(info.value, RuntimeError)  # as deform_conv2d's, whose torchvision twin raises RuntimeError


def test_exception_mixed_devices():
    with pytest.raises(ValueError, match="kernel is on meta but input is on cpu"):
        dynamic_filter2d(**_bad(kernel=torch.randn(2, 9, 5, 6, device="meta")))


def test_module_checks_its_arguments_when_built():
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int, got 4"):
        DynamicFilter2d(4)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        DynamicFilter2d(3, padding_mode="circular")


def test_compiled_op_checks_its_arguments():
    # Direct callers of torch.ops.deblurfast get an error too, never a crash.
    require_backend("dynamic_filter2d", "cpu", "cpu")
    with pytest.raises(RuntimeError, match="kernel has 10 channels"):
        torch.ops.deblurfast.dynamic_filter2d(torch.randn(1, 2, 4, 4), torch.randn(1, 10, 4, 4), 3, 1, "zeros", False)
    with pytest.raises(RuntimeError, match="reflect padding 2 must be smaller"):
        torch.ops.deblurfast.dynamic_filter2d(torch.randn(1, 2, 2, 4), torch.randn(1, 25, 2, 4), 5, 1, "reflect", False)
    with pytest.raises(RuntimeError, match="padding_mode must be"):
        torch.ops.deblurfast.dynamic_filter2d(torch.randn(1, 2, 4, 4), torch.randn(1, 9, 4, 4), 3, 1, "wrap", False)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        torch.ops.deblurfast.dynamic_filter2d(
            torch.randn(1, 2, 4, 4).half(), torch.randn(1, 9, 4, 4).half(), 3, 1, "zeros", False
        )


def test_backend_refusals_are_explained():
    x, kernel = make(1, 2, 4, 4, 3, 1, torch.float16)
    with pytest.raises(BackendError) as info:
        dynamic_filter2d(x, kernel, backend="cpu")
    assert "cpu: dtype float16 not supported (supports float32, float64)" in str(info.value)
    assert "deblurfast.backends()" in str(info.value)
    with pytest.raises(BackendError, match="cuda: "):
        dynamic_filter2d(x.float(), kernel.float(), backend="cuda")
    with pytest.raises(ValueError, match="backend must be 'auto'"):
        dynamic_filter2d(x, kernel, backend="fastest")
    # "auto" falls back to the reference for a dtype no compiled CPU kernel takes.
    out = dynamic_filter2d(x, kernel, backend="auto")
    assert out.dtype == torch.float16


def test_auto_prefers_the_compiled_cpu_kernel():
    require_backend("dynamic_filter2d", "cpu", "cpu")
    x, kernel = make(1, 2, 4, 4, 3, 1, torch.float32)
    assert OP.select("auto", x.device, x.dtype, x, kernel, 3, 1, "reflect", False) is OP.impls["cpu"].fn


# -- module ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_module(backend):
    from deblurfast.nn import DynamicFilter2d

    require_backend("dynamic_filter2d", backend, "cpu", torch.float64)
    m = DynamicFilter2d(3, dilation=2, padding_mode="replicate", normalize="softmax", backend=backend)
    assert list(m.parameters()) == [] and "padding_mode='replicate'" in repr(m)
    x, kernel = make(2, 4, 6, 7, 3, 2)
    assert_close(m(x, kernel), oracles.dynamic_filter2d(x, kernel, 3, 2, "replicate", True))
