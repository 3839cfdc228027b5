import pytest
import torch

import oracles
from deblurfast import efficient_attention
from deblurfast.testing import assert_close
from helpers import backend_params, grads, leaf, require_backend

BACKENDS = backend_params("efficient_attention")


def make(n, c, c2, lin, lout, gate=True, dtype=torch.float64, device="cpu", scale=1.0):
    kw = dict(dtype=dtype, device=device)
    value = torch.randn(n, c, *lin, **kw)
    key = scale * torch.randn(n, c2, *lin, **kw)
    query = scale * torch.randn(n, c2, *lout, **kw)
    g = torch.rand(n, c, **kw) if gate else None
    return value, key, query, g


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize(
    "lin,lout,gate",
    [
        ((4, 5), (4, 5), True),  # self-attention on a feature map
        ((3, 6), (2, 7), True),  # cross-attention: query size differs from key/value
        ((11,), (5,), False),  # flattened positions, no gate
        ((1, 1), (1, 1), True),  # a 1x1 image
    ],
)
def test_smoke_float64_oracle(backend, device, lin, lout, gate):
    require_backend("efficient_attention", backend, device, torch.float64)
    value, key, query, g = make(2, 3, 4, lin, lout, gate, device=device)
    out = efficient_attention(value, key, query, g, backend=backend)
    assert out.shape == (2, 3, *lout)
    assert_close(out.cpu(), oracles.efficient_attention(value, key, query, g))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_huge_logits_do_not_overflow(backend, device):
    require_backend("efficient_attention", backend, device, torch.float32)
    value, key, query, g = make(1, 3, 4, (5, 5), (5, 5), dtype=torch.float32, device=device, scale=1e4)
    out = efficient_attention(value, key, query, g, backend=backend)
    assert torch.isfinite(out).all()
    ref = oracles.efficient_attention(value.double(), key.double(), query.double(), g.double())
    assert_close(out.cpu(), ref, torch.float32)


@pytest.mark.parametrize("case", ["self", "cross", "no_gate", "empty_batch", "non_contiguous", "channels_last"])
def test_gradcheck(case):
    lin, lout = ((3, 4), (3, 4)) if case != "cross" else ((3, 4), (2, 5))
    value, key, query, g = make(0 if case == "empty_batch" else 2, 3, 2, lin, lout, case != "no_gate")
    if case == "non_contiguous":
        value = torch.randn(2, 3, 4, 3, dtype=torch.float64).transpose(2, 3)
        query = torch.randn(2, 4, 3, 2, dtype=torch.float64).permute(0, 3, 2, 1)
        assert not value.is_contiguous() and not query.is_contiguous()
    if case == "channels_last":
        value, key, query = (t.to(memory_format=torch.channels_last) for t in (value, key, query))
    tensors = tuple(leaf(t) if t is not None else None for t in (value, key, query, g))
    assert torch.autograd.gradcheck(lambda *a: efficient_attention(*a, backend="reference"), tensors)


def test_float32_matches_float64_reference_with_gradients():
    value, key, query, g = make(2, 8, 4, (6, 7), (6, 7), dtype=torch.float32)
    t32 = [leaf(t) for t in (value, key, query, g)]
    t64 = [leaf(t.double()) for t in (value, key, query, g)]
    out32, out64 = efficient_attention(*t32), efficient_attention(*t64)
    assert_close(out32, out64, torch.float32)
    for a, b in zip(grads(out32, t32), grads(out64, t64)):
        assert_close(a, b, torch.float32)


def test_memory_is_linear_in_positions():
    # A 256x256 self-attention would need a 65536^2 matrix (16 GiB); the op must not form it.
    value, key, query, g = make(1, 8, 4, (256, 256), (256, 256), dtype=torch.float32)
    out = efficient_attention(value, key, query, g)
    assert out.shape == (1, 8, 256, 256)


def test_compile_fullgraph():
    torch._dynamo.reset()
    args = make(2, 3, 4, (4, 5), (4, 5), dtype=torch.float32)
    f = lambda *a: efficient_attention(*a)  # noqa: E731
    assert_close(torch.compile(f, fullgraph=True)(*args).double(), f(*args).double(), torch.float32)


@pytest.mark.parametrize(
    "shapes,error,match",
    [
        ({"value": (2, 3, 4, 5, 1)}, ValueError, r"value must be .*got shape \(2, 3, 4, 5, 1\)"),
        ({"key": (2, 4, 21)}, ValueError, r"key must be \(N, C2, Lin\) with N=2 and Lin=20"),
        ({"key": (3, 4, 20)}, ValueError, "with N=2"),
        ({"query": (2, 5, 4, 5)}, ValueError, r"query must be \(N, C2, ...\) with N=2 and C2=4"),
        ({"gate": (2, 4)}, ValueError, r"gate must have shape \(N, C\) = \(2, 3\), got \(2, 4\)"),
    ],
)
def test_exceptions(shapes, error, match):
    sizes = {"value": (2, 3, 4, 5), "key": (2, 4, 4, 5), "query": (2, 4, 4, 5), "gate": (2, 3)}
    sizes.update(shapes)
    args = {k: torch.randn(*v) for k, v in sizes.items()}
    with pytest.raises(error, match=match):
        efficient_attention(**args)


def test_exception_dtype():
    v, k, q, g = make(2, 3, 4, (4, 5), (4, 5), dtype=torch.float32)
    with pytest.raises(TypeError, match="query has dtype torch.float64 but value has torch.float32"):
        efficient_attention(v, k, q.double(), g)
