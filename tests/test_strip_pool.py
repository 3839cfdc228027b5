import pytest
import torch
import torch.nn.functional as F

import oracles
from deblurfast import strip_expand, strip_pool
from deblurfast.ops.strip_pool.reference import nearest_index
from deblurfast.testing import assert_close
from helpers import backend_params, leaf, require_backend

POOL_BACKENDS = backend_params("strip_pool")
EXPAND_BACKENDS = backend_params("strip_expand")
SIZES = (1, 3, 5, 7)


@pytest.mark.parametrize("backend,device", POOL_BACKENDS)
@pytest.mark.parametrize("hw", [(11, 13), (7, 7), (2, 3), (1, 1), (6, 10)])  # uneven bins, smaller than n, 1x1
def test_smoke_pool_float64_oracle(backend, device, hw):
    require_backend("strip_pool", backend, device, torch.float64)
    x = torch.randn(2, 3, *hw, dtype=torch.float64, device=device)
    got = strip_pool(x, SIZES, backend=backend)
    for (v, h), (ev, eh), n in zip(got, oracles.strip_pool(x, SIZES), SIZES):
        assert v.shape == (2, 3, hw[0], n) and h.shape == (2, 3, n, hw[1])
        assert_close(v.cpu(), ev, what=f"v_{n}")
        assert_close(h.cpu(), eh, what=f"h_{n}")


@pytest.mark.parametrize("backend,device", EXPAND_BACKENDS)
@pytest.mark.parametrize("size,nv,nh", [((11, 13), 3, 5), ((7, 7), 7, 7), ((2, 3), 5, 1), ((123, 4), 1, 3)])
def test_smoke_expand_float64_oracle(backend, device, size, nv, nh):
    require_backend("strip_expand", backend, device, torch.float64)
    v = torch.randn(2, 3, size[0], nv, dtype=torch.float64, device=device)
    h = torch.randn(2, 3, nh, size[1], dtype=torch.float64, device=device)
    assert_close(strip_expand(v, h, size, backend=backend).cpu(), oracles.strip_expand(v, h, size))


def test_nearest_index_is_exact_where_interpolate_is_not():
    # ops.md: 3 -> 123 is where float rounding of 41*3/123 can give 0 instead of 1.
    idx = nearest_index(123, 3)
    assert idx[41].item() == 1
    assert torch.equal(idx, torch.tensor([(i * 3) // 123 for i in range(123)]))


@pytest.mark.parametrize("length", [320, 180, 640, 360, 1280, 720, 160, 90])  # the models' strip lengths
@pytest.mark.parametrize("n", SIZES)
def test_expand_equals_interpolate_at_model_sizes(length, n):
    v = torch.randn(1, 2, 4, n, dtype=torch.float64)
    exact = strip_expand(v, torch.zeros(1, 2, 1, length, dtype=torch.float64), (4, length))
    assert torch.equal(exact, F.interpolate(v, size=(4, length), mode="nearest"))


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_reference_runs(dtype):
    x = torch.randn(2, 3, 9, 10)
    for (v, h), (ev, eh) in zip(strip_pool(x.to(dtype), SIZES), strip_pool(x.double(), SIZES)):
        assert v.dtype == dtype
        assert (v.double() - ev).abs().max() < 2e-2 and (h.double() - eh).abs().max() < 2e-2


def test_compile_fullgraph():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 9, 10)

    def f(x):
        return [strip_expand(v, h, (9, 10)) for v, h in strip_pool(x)]

    for a, b in zip(torch.compile(f, fullgraph=True)(x), f(x)):
        assert_close(a.double(), b.double(), torch.float32)


def test_exceptions():
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\) \(4-D\), got shape \(3, 4, 5\)"):
        strip_pool(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="x must have H, W >= 1"):
        strip_pool(torch.randn(1, 2, 0, 5))
    with pytest.raises(ValueError, match="sizes must be a non-empty sequence of positive ints, got \\(1, 0\\)"):
        strip_pool(torch.randn(1, 2, 4, 5), (1, 0))
    v, h = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 3, 5)
    with pytest.raises(ValueError, match=r"v must have shape \(N, C', H, n_v\) with H=6"):
        strip_expand(v, h, (6, 5))
    with pytest.raises(ValueError, match=r"h must have shape \(N, C', n_h, W\) = \(1, 2, n_h, 7\)"):
        strip_expand(v, h, (4, 7))
    with pytest.raises(TypeError, match="h has dtype torch.float64"):
        strip_expand(v, h.double(), (4, 5))
    with pytest.raises(ValueError, match="size must be a pair of positive ints"):
        strip_expand(v, h, (4, 0))
