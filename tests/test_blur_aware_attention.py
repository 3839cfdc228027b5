import pytest
import torch
import torch.nn.functional as F

from deblurfast.nn.blur_aware_attention import SIZES, BlurAwareAttention, strip_segments
from deblurfast.ops.strip_pool import blur_aware_mask, blur_aware_mask_reference
from deblurfast.ops.strip_pool.reference import interpolate_nearest_index, nearest_index
from deblurfast.testing import assert_close
from helpers import backend_params, check_double_backward, grads, leaf, require_backend, uninitialized_is_nan
from op_contract import OpContract

BACKENDS = backend_params("blur_aware_mask")

# shared/specs/models/banet.md §4: BA_Block keys (in order) and shapes, BANet (C=128) and BANet+ (C=192).
BANET_KEYS = {
    "conv_1_h.weight": ([64, 128, 3, 1], [96, 192, 3, 1]),
    "conv_1_w.weight": ([64, 128, 1, 3], [96, 192, 1, 3]),
    "conv_3.weight": ([64, 128, 3, 3], [96, 192, 3, 3]),
    "conv_5.weight": ([64, 128, 3, 3], [96, 192, 3, 3]),
    "conv_7.weight": ([64, 128, 3, 3], [96, 192, 3, 3]),
    "fuse_conv.weight": ([64, 256, 1, 1], [192, 384, 1, 1]),
    "conv_final.weight": ([128, 64, 1, 1], [192, 192, 1, 1]),
    "conv_final.bias": ([128], [192]),
    "mask_conv_1.weight": ([128, 128, 3, 3], [192, 192, 3, 3]),
    "mask_conv_1.bias": ([128], [192]),
    "mask_conv_2.weight": ([128, 128, 3, 3], [192, 192, 3, 3]),
    "mask_conv_2.bias": ([128], [192]),
}
VARIANTS = {"banet": (128, None, 0, 590_208), "banet_plus": (192, 192, 1, 1_382_976)}  # (C, F, column, params)


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 convs and matmuls in float32 (PyTorch lets cuDNN use TF32 by default, ~1e-3 off)."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def require(backend, device, dtype):
    require_backend("strip_pool", backend, device, dtype)
    require_backend("blur_aware_mask", backend, device, dtype)


def make_module(channels, fuse_channels, dtype=torch.float64, device="cpu", **kw):
    """A small block with weights scaled so that the masks are not saturated."""
    m = BlurAwareAttention(channels, fuse_channels, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * (1.0 / p[0].numel() ** 0.5))
    return m.to(device=device, dtype=dtype)


def run_block(m, x, fused, backend=None):
    """The block's output and gradients: the authors' composition (fused=False), or the fused
    path with `backend` for its ops (backend="reference": the fused algorithm on reference ops)."""
    m.fused, m.backend = fused, backend
    x = leaf(x)
    out = m(x)
    return [out, *grads(out, [x, *m.parameters()])]


WHAT = ["output", "grad_x"] + [f"grad {name}" for name in BANET_KEYS]


# -- module: structure -------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_banet(variant):
    C, Fc, col, count = VARIANTS[variant]
    m = BlurAwareAttention(C, Fc, device="meta")
    sd = m.state_dict()
    assert list(sd) == list(BANET_KEYS)
    assert {k: list(v.shape) for k, v in sd.items()} == {k: shapes[col] for k, shapes in BANET_KEYS.items()}
    assert sum(p.numel() for p in m.parameters()) == count
    assert not list(m.buffers())


def test_reference_and_fused_share_weights():
    ref = make_module(8, 4, backend="reference")
    fast = BlurAwareAttention(8, 4).double()
    fast.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 8, 6, 7, dtype=torch.float64)
    assert_close(fast(x), ref(x))


# -- module: fused path == reference path ------------------------------------------------


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize(
    "C,Fc,shape",
    [
        (8, None, (2, 9, 13)),  # BANet widths (F = C/2), uneven bins
        (8, 8, (2, 9, 13)),  # BANet+ widths (F = C)
        (6, None, (1, 1, 1)),  # a 1x1 image
        (4, 4, (2, 3, 20)),  # H smaller than the pool sizes
        (4, None, (1, 123, 4)),  # 3 -> 123: F.interpolate's float32 index differs from the exact one
    ],
)
def test_fused_matches_reference_float64(backend, device, C, Fc, shape):
    require(backend, device, torch.float64)
    m = make_module(C, Fc, device=device)
    x = torch.randn(shape[0], C, *shape[1:], dtype=torch.float64, device=device)
    with uninitialized_is_nan():
        got = run_block(m, x, fused=True, backend=backend)
    want = run_block(m, x, fused=False)
    for g, w, what in zip(got, want, WHAT):
        assert_close(g.cpu(), w.cpu(), what=what)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_follows_interpolate_of_the_dtype(backend, device):
    # 3 -> 141: F.interpolate's float64 index differs from its float32 one, and in PyTorch
    # 2.13 also from the index its own float64 backward uses: compare float64 outputs only,
    # float32 outputs and gradients (whose forward and backward agree at every size).
    require(backend, device, torch.float64)
    m = make_module(4, None, device=device)
    x = torch.randn(1, 4, 5, 141, dtype=torch.float64, device=device)
    assert_close(run_block(m, x, True, backend)[0].cpu(), run_block(m, x, False)[0].cpu(), what="float64 output")
    m, x = m.float(), x.float()
    for g, w, what in zip(run_block(m, x, True, backend), run_block(m, x, False), WHAT):
        assert_close(g.double().cpu(), w.double().cpu(), torch.float32, what=f"float32 {what}")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "non_contiguous", "empty_batch"])
def test_fused_float32(backend, device, layout):
    require(backend, device, torch.float32)
    m = make_module(8, 8, torch.float32, device)
    x = torch.randn(0 if layout == "empty_batch" else 2, 8, 10, 11, device=device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    if layout == "non_contiguous":
        x = torch.randn(2, 8, 11, 10, device=device).transpose(2, 3)
    with uninitialized_is_nan():
        got = run_block(m, x, fused=True, backend=backend)
    want = run_block(m.double(), x.double(), fused=False)
    for g, w, what in zip(got, want, WHAT):
        assert g.dtype == torch.float32 and g.shape == w.shape, what
        assert torch.isfinite(g).all(), what
        assert_close(g.cpu(), w.cpu(), torch.float32, what=what)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_under_inference_mode(backend, device):
    """Index tables built under torch.inference_mode have no version counter: still checked, same result."""
    require(backend, device, torch.float32)
    m = make_module(8, 4, torch.float32, device)
    m.fused, m.backend = True, backend
    x = torch.randn(2, 8, 10, 11, device=device)
    with torch.no_grad():
        want = m(x)
    with torch.inference_mode():
        got = m(x)
        again = m(x)  # the tables cached by the first inference call
    assert torch.equal(got, want) and torch.equal(again, want)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_low_precision(backend, device, dtype):
    require(backend, device, dtype)
    m = make_module(8, None, dtype, device)  # weights rounded to dtype once, for every run
    x = torch.randn(2, 8, 9, 12, device=device).to(dtype)
    ref32 = run_block(make_copy(m, torch.float32), x.float(), fused=False)
    ref_lowp = run_block(m, x, fused=False)
    got = run_block(m, x, fused=True, backend=backend)
    for g, r, rl, what in zip(got, ref32, ref_lowp, WHAT):
        assert g.dtype == dtype, what
        assert_close(g.float().cpu(), r.cpu(), dtype, ref_lowp=rl.float().cpu(), what=what)


def make_copy(m, dtype):
    c = BlurAwareAttention(m.channels, m.fuse_channels)
    c.load_state_dict(m.state_dict())
    return c.to(device=next(m.parameters()).device, dtype=dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_gradcheck(backend, device):
    require(backend, device, torch.float64)
    m = make_module(4, 4, device=device, backend=backend)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, device=device)

    def f(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x,))

    inputs = (leaf(x), *(leaf(p.detach()) for p in m.parameters()))
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_return_attention(backend, device):
    require(backend, device, torch.float64)
    m = make_module(6, None, device=device)
    x = torch.randn(1, 6, 7, 9, dtype=torch.float64, device=device)
    m.backend = backend
    out, z = m(x, return_attention=True)
    m.fused = False
    ref_out, ref_z = m(x, return_attention=True)
    assert z.shape == (1, 3, 7, 9)
    assert_close(out.cpu(), ref_out.cpu())
    assert_close(z.cpu(), ref_z.cpu())


def test_exact_integer_nearest():
    m = make_module(4, None, torch.float32, exact_integer_nearest=True)
    x = torch.randn(1, 4, 123, 5)
    exact = [run_block(m, x, fused=f, backend="reference")[0] for f in (True, False)]
    assert_close(exact[0].double(), exact[1].double(), torch.float32)
    m.exact_integer_nearest = False
    legacy = run_block(m, x, fused=False)[0]
    # The rows where the two indices differ (row 41 of the 3-strip: bin 0 for float32 interpolate,
    # bin 1 exactly), widened by two rows by the 3x3 refinement convs, are the rows that differ.
    rows = set()
    for n in SIZES:
        for r in (interpolate_nearest_index(123, n, 2) != nearest_index(123, n)).nonzero().flatten().tolist():
            rows |= set(range(r - 2, r + 3))
    differs = set((exact[1] != legacy).any(3).any(1).any(0).nonzero().flatten().tolist())
    assert 41 in differs and differs <= rows


# -- the nearest indices and the segments they cut ---------------------------------


def test_interpolate_nearest_index():
    lengths = list(range(1, 200)) + [320, 360, 640, 720, 1280]
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for length in lengths:
            for n in SIZES:
                src = torch.randn(1, 2, 3, n).to(dtype)
                expected = F.interpolate(src, size=(3, length), mode="nearest")
                got = src.index_select(3, interpolate_nearest_index(length, n, 3, dtype))
                assert torch.equal(got, expected), (dtype, length, n)
                src = src.transpose(2, 3)
                got = src.index_select(2, interpolate_nearest_index(length, n, 2, dtype))
                assert torch.equal(got, F.interpolate(src, size=(length, 3), mode="nearest")), (dtype, length, n)
    # banet.md §3: for float32, min(floor(i * s), n - 1) with s = n / L and the product in float32
    for length in lengths:
        for n in SIZES:
            s = torch.tensor(n, dtype=torch.float32) / torch.tensor(length, dtype=torch.float32)
            formula = (torch.arange(length, dtype=torch.float32) * s).floor().long().clamp(max=n - 1)
            assert torch.equal(interpolate_nearest_index(length, n), formula), (length, n)
    assert interpolate_nearest_index(123, 3)[41] == 0 and nearest_index(123, 3)[41] == 1


@pytest.mark.parametrize("length", [1, 2, 7, 13, 123, 141, 360])
@pytest.mark.parametrize("exact,dtype", [(False, torch.float32), (False, torch.float64), (True, torch.float32)])
@pytest.mark.parametrize("dim", [2, 3])
def test_strip_segments(length, exact, dtype, dim):
    index, sources = strip_segments(length, dim, exact, dtype, torch.device("cpu"))
    assert index.dtype == torch.int32 and index.shape == (length,) and index[0] == 0
    assert sources.shape == (len(SIZES), int(index[-1]) + 1) and sources.shape[1] <= sum(SIZES)
    assert (index.diff() >= 0).all()
    for i, n in enumerate(SIZES):
        nearest = nearest_index(length, n) if exact else interpolate_nearest_index(length, n, dim, dtype)
        assert torch.equal(sources[i, index.long()], nearest.long())


# -- blur_aware_mask op ---------------------------------------------------------------


def make_mask_args(n, c, f, h, w, ka, kb, dtype=torch.float64, device="cpu", bias=True):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype)  # noqa: E731
    return {
        "x": r(n, c, h, w),
        "row_table": r(n, f, h, ka),
        "col_index": torch.randint(0, ka, (w,), generator=g).to(device),  # any map, not only monotone ones
        "col_table": r(n, f, kb, w),
        "row_index": torch.randint(0, kb, (h,), generator=g, dtype=torch.int32).to(device),
        "weight": r(c, f) / f**0.5,
        "bias": r(c) if bias else None,
    }


DIFF = ("x", "row_table", "col_table", "weight", "bias")


def mask_with_grads(backend, args):
    args = {k: leaf(v) if k in DIFF and v is not None else v for k, v in args.items()}
    out = blur_aware_mask(**args, backend=backend)
    return [out, *(g for g in grads(out, [args[k] for k in DIFF]) if g is not None)]


class TestBlurAwareMaskContract(OpContract):
    op = "blur_aware_mask"
    geometry = dict(n=2, c=3, f=4, h=3, w=5, ka=3, kb=2)  # (N, C, F, H, W, KA, KB)
    layout_geometries = {"empty_batch": dict(geometry, n=0)}
    low_precision_geometries = {"18x20": dict(n=2, c=6, f=8, h=18, w=20, ka=5, kb=7)}

    def make(self, g, dtype, device):
        args = make_mask_args(g["n"], g["c"], g["f"], g["h"], g["w"], g["ka"], g["kb"], torch.float64, device)
        return {k: t.to(dtype) if t.is_floating_point() else t for k, t in args.items()}

    def call(self, backend, g, t):
        return blur_aware_mask(**t, backend=backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize(
    "shape,bias",
    [((2, 5, 3, 4, 9, 4, 6), True), ((1, 3, 20, 2, 3, 16, 2), False), ((1, 2, 1, 1, 1, 1, 1), True)],
)  # (N, C, F, H, W, KA, KB): several channel blocks, F not a power of two, wide tables, 1x1
def test_mask_op_float64(backend, device, shape, bias):
    require_backend("blur_aware_mask", backend, device, torch.float64)
    args = make_mask_args(*shape, device=device, bias=bias)
    with uninitialized_is_nan():
        got = mask_with_grads(backend, args)
    want = mask_with_grads("reference", {k: v.cpu() if v is not None else v for k, v in args.items()})
    assert len(got) == len(want) == 5 + bias
    for g, w in zip(got, want):
        assert_close(g.cpu(), w)


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] != "reference"])
def test_mask_op_one_gradient_at_a_time(backend, device):
    # The backward computes only what is asked for; each gradient alone must still be right.
    require_backend("blur_aware_mask", backend, device, torch.float64)
    args = make_mask_args(1, 3, 2, 3, 5, 3, 2, device=device)
    for key in DIFF:
        a = {k: leaf(v) if k == key else v for k, v in args.items()}
        (got,) = grads(blur_aware_mask(**a, backend=backend), [a[key]])
        r = {k: v.cpu() if v is not None else v for k, v in a.items()}
        r[key] = leaf(r[key])
        (want,) = grads(blur_aware_mask(**r, backend="reference"), [r[key]])
        assert_close(got.cpu(), want, what=key)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mask_op_gradcheck(backend, device):
    require_backend("blur_aware_mask", backend, device, torch.float64)
    args = make_mask_args(1, 3, 2, 3, 4, 3, 2, device=device)
    keys = [k for k in DIFF]

    def f(*tensors):
        return blur_aware_mask(**{**args, **dict(zip(keys, tensors))}, backend=backend)

    assert torch.autograd.gradcheck(f, tuple(leaf(args[k]) for k in keys), fast_mode=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mask_op_double_backward(backend, device):
    """Second-order gradients (issue 12, item 1): the Triton op's first-order gradients run through
    the reference when create_graph=True, so they are differentiable."""
    args = make_mask_args(1, 3, 2, 3, 4, 3, 2)

    def call(be, *tensors):
        return blur_aware_mask(**{**args, **dict(zip(DIFF, tensors))}, backend=be)

    check_double_backward("blur_aware_mask", backend, device, call, tuple(args[k] for k in DIFF))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mask_op_nonfinite_gradient_stays_local(backend, device):
    """A NaN in the output gradient at one pixel reaches only the table entries that pixel read
    (the Triton table gradients are reduced by membership matmuls, where 0 * NaN is NaN)."""
    require_backend("blur_aware_mask", backend, device, torch.float64)
    args = make_mask_args(1, 3, 2, 3, 5, 3, 2, device=device)
    args = {k: leaf(v) if k in ("row_table", "col_table") else v for k, v in args.items()}
    pre = (args["row_table"].index_select(3, args["col_index"].long())
           + args["col_table"].index_select(2, args["row_index"].long())).detach()  # [N, F, H, W]
    y, x = map(int, (pre[0] > 0).any(0).nonzero()[0])  # a pixel where the ReLU passes some f
    out = blur_aware_mask(**args, backend=backend)
    g = torch.zeros_like(out)
    g[0, 1, y, x] = float("nan")
    g_rows, g_cols = torch.autograd.grad(out, [args["row_table"], args["col_table"]], g)
    ia, ib = int(args["col_index"][x]), int(args["row_index"][y])
    active = pre[0, :, y, x] > 0
    expected_rows = torch.zeros_like(g_rows, dtype=torch.bool)
    expected_rows[0, :, y, ia] = active
    expected_cols = torch.zeros_like(g_cols, dtype=torch.bool)
    expected_cols[0, :, ib, x] = active
    assert torch.equal(g_rows.isnan(), expected_rows) and torch.equal(g_cols.isnan(), expected_cols)


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] == "triton"])
@pytest.mark.parametrize("programs_per_tile", [4, 10**6])  # chunks of 3 rows; of 1 row
@pytest.mark.parametrize("monotone_columns", [False, True])
def test_mask_op_triton_row_chunks(backend, device, programs_per_tile, monotone_columns, monkeypatch):
    """The Triton backward's programs each own a chunk of rows (sorted by row_index) of a column tile:
    several chunks and column tiles, a row map that is not monotone, col_table rows read by no row or by
    rows in several chunks, more than one channel block, and column tiles that read every row_table entry
    or (a monotone col_index) only some. The GPU sizes chunks for its SMs, the interpreter runs one chunk;
    here the chunking is forced."""
    require_backend("blur_aware_mask", backend, device, torch.float64)
    from deblurfast.kernels import strip_pool as kernels

    args = make_mask_args(2, 20, 3, 11, 70, 3, 6, device=device)  # 2 column tiles of 64, 2 channel blocks
    args["row_index"] = torch.tensor([5, 0, 2, 2, 5, 0, 0, 5, 2, 0, 5], dtype=torch.int32, device=device)
    if monotone_columns:  # the second tile (columns 64-69) reads entry 2 only
        args["col_index"] = (torch.arange(70) * 3 // 70).to(device)
    n_wb = -(-70 // kernels._mask_bwd_config(3, torch.float64)["BLOCK_W"])
    monkeypatch.setattr(kernels, "_target_programs", lambda device: 2 * n_wb * programs_per_tile)
    with uninitialized_is_nan():
        got = mask_with_grads(backend, args)
    want = mask_with_grads("reference", {k: v.cpu() if v is not None else v for k, v in args.items()})
    for g, w, what in zip(got, want, ("out",) + DIFF):
        assert_close(g.cpu(), w, what=what)


# -- the module compiled --------------------------------------------------------------------


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] == "cpu"])
def test_mask_op_cpu_row_tiles(backend, device):
    """Several row tiles per image (the C++ kernel's tiles hold 2048 pixels): the weight and bias
    gradients are summed over tiles and col_table's rows are shared by rows of different tiles."""
    require_backend("blur_aware_mask", backend, device, torch.float64)
    args = make_mask_args(2, 3, 4, 150, 40, 5, 7, device=device)  # 51 rows per tile: 3 tiles per image
    with uninitialized_is_nan():
        got = mask_with_grads(backend, args)
    for g, w, what in zip(got, mask_with_grads("reference", args), ("out",) + DIFF):
        assert_close(g, w, what=what)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_compile_fullgraph(backend, device):
    require(backend, device, torch.float32)
    torch._dynamo.reset()
    m = make_module(4, None, torch.float32, device, backend=backend)
    x = torch.randn(1, 4, 6, 7, device=device)
    compiled = torch.compile(m, fullgraph=True)
    xs, xe = leaf(x), leaf(x)
    out = compiled(xs)
    out.square().sum().backward()
    got = [out, xs.grad, *(p.grad for p in m.parameters())]
    m.zero_grad()
    expected = m(xe)
    expected.square().sum().backward()
    want = [expected, xe.grad, *(p.grad for p in m.parameters())]
    for g, w, what in zip(got, want, WHAT):
        assert_close(g.double().cpu(), w.double().cpu(), torch.float32, what=what)


# -- exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"x": torch.randn(2, 3, 4)}, ValueError, r"x must be \(N, C, H, W\) \(4-D\), got shape \(2, 3, 4\)"),
        ({"row_table": torch.randn(2, 4, 3, 3)}, ValueError,
         r"row_table must have shape \(N, F, H, KA\) = \(2, F, 4, KA\)"),
        ({"col_table": torch.randn(2, 4, 2, 6)}, ValueError,
         r"col_table must have shape \(N, F, KB, W\) = \(2, 4, KB, 5\)"),
        ({"weight": torch.randn(3, 5)}, ValueError, r"weight must have shape \(C, F\) = \(3, 4\) or \(3, 4, 1, 1\)"),
        ({"weight": torch.randn(3, 4, 3, 3)}, ValueError, r"weight must have shape \(C, F\)"),
        ({"bias": torch.randn(4)}, ValueError, r"bias must have shape \(C,\) = \(3\), got \(4\)"),
        ({"row_table": torch.randn(2, 4, 4, 3).double()}, TypeError, "row_table has dtype torch.float64"),
        ({"col_index": torch.zeros(4, dtype=torch.long)}, ValueError,
         r"col_index must be an int32/int64 tensor of shape \(5,\)"),
        ({"row_index": torch.zeros(4)}, ValueError, r"row_index must be an int32/int64 tensor .* got torch.float32"),
        ({"col_index": [0, 1]}, TypeError, "col_index must be a torch.Tensor"),
        ({"row_table": torch.randn(2, 0, 4, 3), "col_table": torch.randn(2, 0, 2, 5), "weight": torch.randn(3, 0)},
         ValueError, r"row_table must have shape .* with F, KA >= 1, got \(2, 0, 4, 3\)"),
    ],
)
def test_mask_exceptions(overrides, error, match):
    args = make_mask_args(2, 3, 4, 4, 5, 3, 2, torch.float32)
    with pytest.raises(error, match=match):
        blur_aware_mask(**{**args, **overrides})


def test_module_exceptions():
    with pytest.raises(ValueError, match="channels must be an even int >= 2, got 7"):
        BlurAwareAttention(7)
    with pytest.raises(ValueError, match="fuse_channels must be a positive int, got 0"):
        BlurAwareAttention(8, 0)
    with pytest.raises(ValueError, match=r"x must be \(N, 8, H, W\), got \(1, 4, 5, 5\)"):
        BlurAwareAttention(8)(torch.randn(1, 4, 5, 5))


def test_reference_is_the_plain_composition():
    # The mask op's reference is exactly its formula (and it is what the fused path calls on CPU).
    a = make_mask_args(1, 3, 2, 4, 5, 3, 2)
    z = torch.relu(a["row_table"][..., a["col_index"]] + a["col_table"][:, :, a["row_index"].long(), :])
    u = torch.einsum("cf,nfhw->nchw", a["weight"], z) + a["bias"].view(1, -1, 1, 1)
    assert_close(blur_aware_mask_reference(**a), a["x"] * torch.sigmoid(u))


def test_mask_op_rejects_out_of_range_indices():
    x = torch.randn(1, 4, 5, 6)
    row_table, col_table = torch.randn(1, 2, 5, 3), torch.randn(1, 2, 2, 6)
    weight, bias = torch.randn(4, 2), torch.randn(4)
    good_col, good_row = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 1, 1, 1])
    blur_aware_mask(x, row_table, good_col, col_table, good_row, weight, bias)
    with pytest.raises(ValueError, match=r"col_index values must be in \[0, 3\), got values from 0 to 3"):
        blur_aware_mask(x, row_table, torch.tensor([0, 0, 1, 1, 2, 3]), col_table, good_row, weight, bias)
    bad_row = good_row.clone()
    blur_aware_mask(x, row_table, good_col, col_table, bad_row, weight, bias)  # checked, remembered
    bad_row[0] = -1  # an in-place change bumps the version: checked again
    with pytest.raises(ValueError, match=r"row_index values must be in \[0, 2\), got values from -1 to 1"):
        blur_aware_mask(x, row_table, good_col, col_table, bad_row, weight, bias)


def test_reference_path_pools_as_the_authors_layers_bit_for_bit():
    # The reference path pools with strip_pool (one exact node in an ONNX export); in eager it must
    # equal the authors' AdaptiveAvgPool2d layers exactly, at sizes 3, 5 and 7 do not divide.
    from deblurfast.ops import strip_pool

    torch.manual_seed(0)
    ba = BlurAwareAttention(8, backend="reference")
    for H, W in [(11, 13), (17, 8), (123, 45)]:
        x = torch.randn(2, 8, H, W)
        pooled = strip_pool(x, (1, 3, 5, 7), backend="reference")
        for (v, h), ph, pw in zip(pooled, (ba.pool_1_h, ba.pool_3_h, ba.pool_5_h, ba.pool_7_h),
                                  (ba.pool_1_w, ba.pool_3_w, ba.pool_5_w, ba.pool_7_w)):
            assert torch.equal(v, ph(x)) and torch.equal(h, pw(x))
