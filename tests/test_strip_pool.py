import pytest
import torch
import torch.nn.functional as F

import oracles
from deblurfast import BackendError, strip_expand, strip_pool
from deblurfast.kernels import strip_pool as kernels
from deblurfast.ops.strip_pool.reference import nearest_index
from deblurfast.testing import assert_close
from helpers import backend_params, check_double_backward, grads, leaf, require_backend, uninitialized_is_nan
from op_contract import OpContract

POOL_BACKENDS = backend_params("strip_pool")
EXPAND_BACKENDS = backend_params("strip_expand")
SIZES = (1, 3, 5, 7)


class TestStripPoolContract(OpContract):
    op = "strip_pool"
    geometry = dict(n=2, c=3, h=10, w=9, sizes=SIZES)
    layout_geometries = {"empty_batch": dict(geometry, n=0), "no_channels": dict(geometry, c=0)}
    low_precision_geometries = {"13x22": dict(geometry, c=4, h=13, w=22)}

    def make(self, g, dtype, device):
        return {"x": torch.randn(g["n"], g["c"], g["h"], g["w"], dtype=torch.float64).to(device, dtype)}

    def call(self, backend, g, t):
        return [m for pair in strip_pool(t["x"], g["sizes"], backend=backend) for m in pair]


class TestStripExpandContract(OpContract):
    op = "strip_expand"
    geometry = dict(n=2, c=3, h=10, w=9, nv=3, nh=5)
    layout_geometries = {"empty_batch": dict(geometry, n=0), "no_channels": dict(geometry, c=0)}
    low_precision_geometries = {"13x22": dict(n=2, c=4, h=13, w=22, nv=5, nh=7)}

    def make(self, g, dtype, device):
        v = torch.randn(g["n"], g["c"], g["h"], g["nv"], dtype=torch.float64)
        h = torch.randn(g["n"], g["c"], g["nh"], g["w"], dtype=torch.float64)
        return {"v": v.to(device, dtype), "h": h.to(device, dtype)}

    def call(self, backend, g, t):
        return strip_expand(t["v"], t["h"], (g["h"], g["w"]), backend=backend)


def pool_flat(backend, x, sizes=SIZES):
    """All pooled maps of x, flattened per (n, c) into one tensor (so one gradient covers them all)."""
    outs = strip_pool(x, sizes, backend=backend)
    return torch.cat([t.reshape(t.shape[0], t.shape[1], t.shape[2] * t.shape[3]) for pair in outs for t in pair], -1)


def pool_with_grad(backend, x, sizes=SIZES):
    x = leaf(x)
    out = pool_flat(backend, x, sizes)
    return out, grads(out, [x])[0]


def expand_with_grads(backend, v, h, size):
    v, h = leaf(v), leaf(h)
    out = strip_expand(v, h, size, backend=backend)
    return (out, *grads(out, [v, h]))


@pytest.fixture
def many_tiles(monkeypatch):
    """Tiles of 16 rows and 16 columns, so small inputs take the kernels' multi-tile paths."""
    monkeypatch.setattr(kernels, "_MAX_BLOCK_W", 16)
    monkeypatch.setattr(kernels, "_MAX_BLOCK_H", 16)


# -- smoke: every backend against the loop-level float64 oracle ----------------


@pytest.mark.parametrize("backend,device", POOL_BACKENDS)
@pytest.mark.parametrize("hw", [(11, 13), (7, 7), (2, 3), (1, 1), (6, 10)])  # uneven bins, smaller than n, 1x1
def test_smoke_pool_float64_oracle(backend, device, hw):
    require_backend("strip_pool", backend, device, torch.float64)
    x = torch.randn(2, 3, *hw, dtype=torch.float64, device=device)
    with uninitialized_is_nan():
        got = strip_pool(x, SIZES, backend=backend)
        _, gx = pool_with_grad(backend, x)
    for (v, h), (ev, eh), n in zip(got, oracles.strip_pool(x.cpu(), SIZES), SIZES):
        assert v.shape == (2, 3, hw[0], n) and h.shape == (2, 3, n, hw[1])
        assert_close(v.cpu(), ev, what=f"v_{n}")
        assert_close(h.cpu(), eh, what=f"h_{n}")
    # Backward against the reference's autograd (itself gradchecked below).
    assert_close(gx.cpu(), pool_with_grad("reference", x.cpu())[1], what="grad_x")


@pytest.mark.parametrize("backend,device", POOL_BACKENDS)
@pytest.mark.parametrize("sizes", [(2,), (7, 1, 4), (1, 2, 3, 4, 5, 6, 7, 8)])  # other sizes, in any order, up to 8
def test_smoke_pool_other_sizes(backend, device, sizes):
    require_backend("strip_pool", backend, device, torch.float64)
    x = torch.randn(1, 2, 9, 6, dtype=torch.float64, device=device)
    got = strip_pool(x, sizes, backend=backend)
    for (v, h), (ev, eh) in zip(got, oracles.strip_pool(x.cpu(), sizes)):
        assert_close(v.cpu(), ev)
        assert_close(h.cpu(), eh)
    assert_close(pool_with_grad(backend, x, sizes)[1].cpu(), pool_with_grad("reference", x.cpu(), sizes)[1])


@pytest.mark.parametrize("backend,device", EXPAND_BACKENDS)
@pytest.mark.parametrize("size,nv,nh", [((11, 13), 3, 5), ((7, 7), 7, 7), ((2, 3), 5, 1), ((123, 4), 1, 3)])
def test_smoke_expand_float64_oracle(backend, device, size, nv, nh):
    require_backend("strip_expand", backend, device, torch.float64)
    v = torch.randn(2, 3, size[0], nv, dtype=torch.float64, device=device)
    h = torch.randn(2, 3, nh, size[1], dtype=torch.float64, device=device)
    with uninitialized_is_nan():
        out, gv, gh = expand_with_grads(backend, v, h, size)
    assert_close(out.cpu(), oracles.strip_expand(v.cpu(), h.cpu(), size))
    _, rgv, rgh = expand_with_grads("reference", v.cpu(), h.cpu(), size)
    assert_close(gv.cpu(), rgv, what="grad_v")
    assert_close(gh.cpu(), rgh, what="grad_h")


@pytest.mark.parametrize("backend,device", [p for p in POOL_BACKENDS if p.values[0] == "triton"])
@pytest.mark.parametrize("ranges", ["one", "per_tile"])
def test_multi_tile_paths(backend, device, ranges, many_tiles, monkeypatch):
    # W = 40 in tiles of 16: a reduce program walks several tiles (its partial of v is read back and
    # added), or each tile is its own range (the finish kernel sums the ranges' partials); H = 19 in tiles
    # of 16: a spread program walks both row tiles of its columns, or each row tile is its own program.
    require_backend("strip_pool", backend, device, torch.float64)
    monkeypatch.setattr(kernels, "_target_programs", lambda device: 1 if ranges == "one" else 10**6)
    x = torch.randn(2, 2, 19, 40, dtype=torch.float64, device=device)
    with uninitialized_is_nan():
        out, gx = pool_with_grad(backend, x)
        eout, egv, egh = expand_with_grads(backend, x[..., :5], x[:, :, :3, :], (19, 40))
    assert_close(out.cpu(), pool_flat("reference", x.cpu()), what="pool")
    assert_close(gx.cpu(), pool_with_grad("reference", x.cpu())[1], what="pool grad_x")
    for got, want, what in zip((eout, egv, egh), expand_with_grads("reference", x[..., :5].cpu(), x[:, :, :3, :].cpu(),
                                                                   (19, 40)), ("expand", "grad_v", "grad_h")):
        assert_close(got.cpu(), want, what=what)


@pytest.mark.parametrize("backend,device", [p for p in POOL_BACKENDS if p.values[0] == "triton"])
def test_half_backward_is_the_rounded_float64_gradient(backend, device):
    # grad_x of the means in float16: the bin weights 1/3, 1/5, 1/7 ... are not float16 numbers. The
    # kernel's tensor-core product carries each as hi + lo, so grad_x is the float64 gradient rounded
    # (with the float16 weight alone, 37% of the elements were off, some by several percent).
    require_backend("strip_pool", backend, device, torch.float16)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 45, 61, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(pool_flat("reference", x).shape, generator=gen, dtype=torch.float64).half()
    xh = leaf(x.half().to(device))
    got = torch.autograd.grad(pool_flat(backend, xh), xh, grad_out.to(device))[0].cpu()
    x64 = leaf(x.half().double())
    want = torch.autograd.grad(pool_flat("reference", x64), x64, grad_out.double())[0].half()
    assert (got == want).float().mean() >= 0.99
    assert ((got.float() - want.float()).abs() <= want.float().abs() * 2**-10 + 2**-24).all()  # 1 ulp at most


def test_nearest_index_is_exact_where_interpolate_is_not():
    # ops.md: 3 -> 123 is where float rounding of 41*3/123 can give 0 instead of 1.
    idx = nearest_index(123, 3)
    assert idx[41].item() == 1
    assert torch.equal(idx, torch.tensor([(i * 3) // 123 for i in range(123)]))


@pytest.mark.parametrize("backend,device", EXPAND_BACKENDS)
def test_expand_equals_interpolate_at_model_sizes(backend, device):
    require_backend("strip_expand", backend, device, torch.float64)
    for length in (320, 180, 640, 360, 1280, 720, 160, 90):  # the models' strip lengths
        for n in SIZES:
            v = torch.randn(1, 2, 4, n, dtype=torch.float64, device=device)
            exact = strip_expand(v, torch.zeros(1, 2, 1, length, dtype=torch.float64, device=device), (4, length),
                                 backend=backend)
            assert torch.equal(exact, F.interpolate(v, size=(4, length), mode="nearest")), (length, n)


# -- gradcheck ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "empty_batch", "non_contiguous", "channels_last"])
def test_gradcheck(case):
    x = torch.randn(0 if case == "empty_batch" else 2, 2, 5, 6, dtype=torch.float64)
    if case == "non_contiguous":
        x = torch.randn(2, 2, 6, 5, dtype=torch.float64).transpose(2, 3)
    if case == "channels_last":
        x = x.to(memory_format=torch.channels_last)

    def f(x):
        outs = strip_pool(x, SIZES, backend="reference")
        return tuple(strip_expand(v, h, (5, 6), backend="reference") for v, h in outs)

    assert torch.autograd.gradcheck(f, (leaf(x),))


def test_low_precision_reference_runs():
    x = torch.randn(2, 3, 9, 10)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for (v, h), (ev, eh) in zip(strip_pool(x.to(dtype), SIZES), strip_pool(x.double(), SIZES)):
            assert v.dtype == dtype
            assert (v.double() - ev).abs().max() < 2e-2 and (h.double() - eh).abs().max() < 2e-2


# -- second-order gradients, non-finite values (issue 12, items 1 and 2) ---------


@pytest.mark.parametrize("backend,device", POOL_BACKENDS)
def test_double_backward(backend, device):
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    # squared, so that the second-order gradients are not zero for a linear op
    check_double_backward("strip_pool", backend, device, lambda be, x: pool_flat(be, x, (1, 3)).square(), (x,))
    v, h = torch.randn(1, 2, 4, 3, dtype=torch.float64), torch.randn(1, 2, 2, 5, dtype=torch.float64)
    check_double_backward("strip_expand", backend, device,
                          lambda be, v, h: strip_expand(v, h, (4, 5), backend=be).square(), (v, h))


@pytest.mark.parametrize("backend,device", POOL_BACKENDS)
def test_nonfinite_values_stay_in_their_bins(backend, device, many_tiles):
    """A NaN/inf pixel reaches only the bins that hold it, forward and backward (the Triton
    kernels' 0/1 membership matmuls carried it into every bin of its row and column as 0 * inf)."""
    require_backend("strip_pool", backend, device, torch.float64)
    x = torch.randn(1, 2, 9, 20, dtype=torch.float64)
    x[0, 0, 3, 4], x[0, 0, 3, 17], x[0, 1, 8, 0], x[0, 1, 0, 19] = float("nan"), float("inf"), float("-inf"), float(
        "inf")
    sizes = (1, 3, 5)
    expected = oracles.strip_pool(x, sizes)
    got = strip_pool(x.to(device), sizes, backend=backend)
    for (v, h), (ev, eh) in zip(got, expected):
        assert_close(v.cpu(), ev)  # NaN and inf positions equal, the rest close
        assert_close(h.cpu(), eh)
    # backward: a NaN in the gradient of one bin reaches that bin's pixels only
    xs = leaf(x.to(device))
    grad = [torch.zeros_like(t) for pair in strip_pool(xs, sizes, backend=backend) for t in pair]
    grad[2][0, 0, 5, 1] = float("nan")  # v of n = 3, row 5, bin 1: columns [6, 14)
    grad[5][0, 1, 4, 7] = float("inf")  # h of n = 5, bin 4, column 7: rows [7, 9)
    outs = [t for pair in strip_pool(xs, sizes, backend=backend) for t in pair]
    (gx,) = torch.autograd.grad(outs, [xs], grad)
    nan = torch.zeros_like(x, dtype=torch.bool)
    nan[0, 0, 5, 6:14] = True
    inf = torch.zeros_like(x, dtype=torch.bool)
    inf[0, 1, 7:9, 7] = True
    assert torch.equal(gx.isnan().cpu(), nan) and torch.equal(gx.isinf().cpu(), inf)
    # strip_expand's backward sums over the pixels each map entry was expanded to
    v, h = leaf(torch.randn(1, 2, 9, 3, device=device)), leaf(torch.randn(1, 2, 4, 20, device=device))
    g = torch.zeros(1, 2, 9, 20, device=device)
    g[0, 1, 2, 15] = float("nan")
    gv, gh = torch.autograd.grad(strip_expand(v, h, (9, 20), backend=backend), [v, h], g)
    assert gv.isnan().sum() == 1 and gv[0, 1, 2, 15 * 3 // 20].isnan()
    assert gh.isnan().sum() == 1 and gh[0, 1, 2 * 4 // 9, 15].isnan()


# -- exceptions ------------------------------------------------------------------


def test_exceptions():
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\) \(4-D\), got shape \(3, 4, 5\)"):
        strip_pool(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="x must have H, W >= 1"):
        strip_pool(torch.randn(1, 2, 0, 5))
    with pytest.raises(ValueError, match="sizes must be a non-empty sequence of positive ints, got \\(1, 0\\)"):
        strip_pool(torch.randn(1, 2, 4, 5), (1, 0))
    with pytest.raises(ValueError, match="sizes must be a non-empty sequence of positive ints, got 3"):
        strip_pool(torch.randn(1, 2, 4, 5), 3)
    with pytest.raises(ValueError, match="sizes must be .* got \\(True,\\)"):
        strip_pool(torch.randn(1, 2, 4, 5), (True,))
    v, h = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 3, 5)
    with pytest.raises(ValueError, match=r"v must have shape \(N, C', H, n_v\) with H=6"):
        strip_expand(v, h, (6, 5))
    with pytest.raises(ValueError, match=r"h must have shape \(N, C', n_h, W\) = \(1, 2, n_h, 7\)"):
        strip_expand(v, h, (4, 7))
    with pytest.raises(TypeError, match="h has dtype torch.float64"):
        strip_expand(v, h.double(), (4, 5))
    with pytest.raises(ValueError, match="size must be a pair of positive ints"):
        strip_expand(v, h, (4, 0))
    with pytest.raises(ValueError, match="size must be a pair of positive ints"):
        strip_expand(v, h, (True, 5))


def test_triton_refusals_are_explained():
    require_backend("strip_pool", "triton", "cpu", torch.float32)
    x = torch.randn(1, 2, 4, 5)
    with pytest.raises(BackendError, match="triton: 9 sizes > 8"):
        strip_pool(x, (1,) * 9, backend="triton")
    with pytest.raises(BackendError, match=r"triton: sum\(sizes\) = 65 > 64"):
        strip_pool(x, (65,), backend="triton")
    with pytest.raises(BackendError, match="triton: n_v = 65"):
        strip_expand(torch.randn(1, 2, 4, 65), torch.randn(1, 2, 3, 5), (4, 5), backend="triton")
    # a preference list falls back to the reference
    assert len(strip_pool(x, (65,), backend="triton,reference")) == 1
