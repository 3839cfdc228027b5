import math

import pytest
import torch

import oracles
from deblurfast import efficient_attention
from deblurfast.ops.efficient_attention import OP
from deblurfast.kernels.limits import EFFICIENT_ATTENTION_MAX_MAPS as TRITON_MAX_MAPS
from deblurfast.testing import assert_close
from helpers import backend_params, check_double_backward, grads, leaf, require_backend, uninitialized_is_nan
from op_contract import OpContract

BACKENDS = backend_params("efficient_attention")
NAMES = ("value", "key", "query", "gate")


def make(n, c, c2, lin, lout, gate=True, dtype=torch.float64, device="cpu", scale=1.0):
    kw = dict(dtype=dtype, device=device)
    value = torch.randn(n, c, *lin, **kw)
    key = scale * torch.randn(n, c2, *lin, **kw)
    query = scale * torch.randn(n, c2, *lout, **kw)
    g = torch.rand(n, c, **kw) if gate else None
    return value, key, query, g


class TestEfficientAttentionContract(OpContract):
    op = "efficient_attention"
    # C = 18: two of the interpreter's 16-wide channel blocks; cross-attention (Lout != Lin)
    geometry = dict(n=2, c=18, c2=5, lin=(6, 7), lout=(5, 4), gate=True)
    layout_geometries = {"no_gate": dict(geometry, gate=False)}
    low_precision_geometries = {"c20": dict(n=2, c=20, c2=6, lin=(7, 9), lout=(6, 5), gate=True)}
    opcheck_geometries = {"gate": dict(n=2, c=4, c2=3, lin=(4, 5), lout=(3, 3), gate=True),
                          "no_gate": dict(n=2, c=4, c2=3, lin=(4, 5), lout=(3, 3), gate=False)}

    def make(self, g, dtype, device):
        tensors = make(g["n"], g["c"], g["c2"], g["lin"], g["lout"], g["gate"], torch.float64, device)
        return dict(zip(NAMES, to(tensors, dtype=dtype)))

    def call(self, backend, g, t):
        return efficient_attention(t["value"], t["key"], t["query"], t["gate"], backend=backend)


def run_with_grads(backend, tensors, wanted=(True, True, True, True)):
    """Output and the gradients of <out, fixed random> w.r.t. each input whose flag in `wanted` is set."""
    tensors = [leaf(t, bool(w)) if t is not None else None for t, w in zip(tensors, wanted)]
    out = efficient_attention(*tensors, backend=backend)
    return out, grads(out, tensors) if any(t is not None and t.requires_grad for t in tensors) else [None] * 4


def to(tensors, **kw):
    return [t.to(**kw) if t is not None else None for t in tensors]


def assert_matches_reference(backend, device, tensors, dtype=None, oracle=False):
    """Output (and, when oracle=True, the float64 loop oracle) and all four
    gradients of `backend` against the float64 reference, at `dtype`'s tolerance."""
    with uninitialized_is_nan():
        out, got = run_with_grads(backend, to(tensors, device=device))
    cpu64 = to(tensors, device="cpu", dtype=torch.float64)
    ref, want = run_with_grads("reference", cpu64)
    if oracle:
        assert_close(out.cpu(), oracles.efficient_attention(*cpu64), dtype, what="forward vs oracle")
    assert_close(out.cpu(), ref, dtype, what="forward")
    for name, t, g, w in zip(NAMES, tensors, got, want):
        if t is not None:
            assert g.shape == t.shape and g.dtype == t.dtype, name
            assert_close(g.cpu(), w, dtype, what=f"grad_{name}")


# -- every backend against the float64 oracle and the reference's gradients -----


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize(
    "c,c2,lin,lout,gate",
    [
        (3, 4, (4, 5), (4, 5), True),  # self-attention on a feature map
        (3, 4, (3, 6), (2, 7), True),  # cross-attention: query size differs from key/value
        (3, 4, (11,), (5,), False),  # flattened positions, no gate
        (3, 4, (1, 1), (1, 1), True),  # a 1x1 image
        (20, 5, (3, 7), (4, 3), True),  # C over several channel blocks (d_query not fused)
        (20, 3, (3, 7), (4, 3), False),
    ],
)
def test_smoke_float64_oracle(backend, device, c, c2, lin, lout, gate):
    require_backend("efficient_attention", backend, device, torch.float64)
    tensors = make(2, c, c2, lin, lout, gate)
    assert_matches_reference(backend, device, tensors, oracle=True)


def test_shapes_exercise_the_kernels_blocks():
    # The interpreter's tiles are 16 wide: C=20 takes two channel blocks, C=3 one.
    pytest.importorskip("triton")
    from deblurfast.kernels import efficient_attention as kernels

    cfg = kernels.config(20, 5, torch.float64, torch.device("cpu"))
    assert math.ceil(20 / cfg["BLOCK_C"]) == 2 and math.ceil(3 / cfg["BLOCK_C"]) == 1


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_positions_split_across_programs(backend, device):
    # Keys rise along the positions, so later splits hold larger maxima and the
    # combine must rescale the earlier partials by exp(m_s - M) (some underflow to 0).
    require_backend("efficient_attention", backend, device, torch.float64)
    n, c, c2, lin, lout = 2, 6, 3, (12, 12), (10, 13)
    value, key, query, g = make(n, c, c2, lin, lout)
    ramp = torch.linspace(0, 60, 144, dtype=torch.float64).reshape(1, 1, 12, 12)
    key = 20 * key + ramp * torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64).reshape(1, 3, 1, 1)
    query = 8 * query
    if backend == "triton":
        from deblurfast.kernels import efficient_attention as kernels

        cfg = kernels.config(c, c2, torch.float64, torch.device(device))
        for L in (144, 130):  # context pass over Lin, gradient reduction over Lout
            S, tiles_per_split = kernels.splits(L, cfg["BLOCK_L"], n, torch.device(device))
            assert S >= 3, f"L={L} must be split across >= 3 programs per (n, map), got {S}"
            if device == "cpu":
                assert tiles_per_split >= 2, "each program must also loop over several tiles"
    assert_matches_reference(backend, device, (value, key, query, g), oracle=True)


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] == "cpu"])
def test_cpu_chunks_and_blocks(backend, device):
    # 9100 positions: the C++ kernel's context pass takes 8 chunks (3 rounded up to a multiple of 8) of
    # 3 blocks (512, 512, 114 positions), its gradient of gate * ctx 8 chunks over the output positions. Keys rise along the positions in
    # map 0 and fall in map 1, so the running max grows inside a chunk (partials are rescaled) and
    # differs between chunks (the combine rescales them).
    require_backend("efficient_attention", backend, device, torch.float64)
    value, key, query, g = make(1, 5, 3, (70, 130), (91, 100))
    ramp = torch.linspace(0, 80, 9100, dtype=torch.float64).reshape(1, 1, 70, 130)
    key = 3 * key + ramp * torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    assert_matches_reference(backend, device, (value, key, 4 * query, g))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_huge_logits_do_not_overflow(backend, device):
    require_backend("efficient_attention", backend, device, torch.float32)
    tensors = make(2, 3, 4, (9, 9), (5, 5), dtype=torch.float32, device=device, scale=1e4)
    out, got = run_with_grads(backend, tensors)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in got)
    assert_matches_reference(backend, device, tensors, torch.float32, oracle=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("wanted", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 0)])
@pytest.mark.parametrize("c", [3, 20])
def test_gradients_only_where_needed(backend, device, wanted, c):
    require_backend("efficient_attention", backend, device, torch.float64)
    tensors = to(make(2, c, 3, (4, 5), (3, 4)), device=device)
    with uninitialized_is_nan():
        _, got = run_with_grads(backend, tensors, wanted)
    _, want = run_with_grads("reference", to(tensors, device="cpu"), wanted)
    for name, w, g, r in zip(NAMES, wanted, got, want):
        assert (g is None) == (not w), name
        if w:
            assert_close(g.cpu(), r, what=f"grad_{name}")


def test_triton_backward_returns_placeholders_for_unneeded_gradients():
    require_backend("efficient_attention", "triton", "cpu", torch.float32)
    value, key, query, g = make(2, 3, 4, (4, 5), (3, 3), dtype=torch.float32)
    grad = torch.randn(2, 3, 3, 3)
    op = torch.ops.deblurfast.efficient_attention_triton_backward
    gv, gk, gq, gg = op(grad, value, key, query, g, [False, True, False, True])
    assert gv.numel() == 0 and gq.numel() == 0 and gk.shape == key.shape and gg.shape == g.shape
    gv, gk, gq, gg = op(grad, value, key, query, None, [True, False, True, True])
    assert gv.shape == value.shape and gq.shape == query.shape and gg.numel() == 0


# -- degenerate shapes ------------------------------------------------------------


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", ["empty_batch", "no_key_positions", "no_query_positions", "no_maps"])
def test_degenerate_shapes(backend, device, shape):
    require_backend("efficient_attention", backend, device, torch.float32)
    n, c2, lin, lout = 2, 3, (4, 5), (3, 3)
    if shape == "empty_batch":
        n = 0
    if shape == "no_key_positions":
        lin = (0, 5)
    if shape == "no_query_positions":
        lout = (3, 0)
    if shape == "no_maps":
        c2 = 0
    tensors = make(n, 4, c2, lin, lout, dtype=torch.float32, device=device)
    out, got = run_with_grads(backend, tensors)
    assert out.shape == (n, 4, *lout)
    assert_matches_reference(backend, device, tensors, torch.float32)


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] != "reference"])
def test_float16_gradients_of_long_reductions_do_not_overflow(backend, device):
    # d_ctx = G softmax(query)^T sums over all Lout positions: here ~1.6e5, beyond float16's
    # 65504, although every input, output and gradient fits. The kernels must not round it to float16.
    require_backend("efficient_attention", backend, device, torch.float16)
    value, key, query, _ = make(1, 4, 2, (8, 8), (8, 8), gate=False, dtype=torch.float32)
    tensors = [leaf(t.to(device, torch.float16)) for t in (value, key, query)]
    efficient_attention(*tensors, backend=backend).backward(torch.full((1, 4, 8, 8), 5000.0, device=device).half())
    expected = [leaf(t.double()) for t in (value, key, query)]
    efficient_attention(*expected, backend="reference").backward(torch.full((1, 4, 8, 8), 5000.0).double())
    for name, t, e in zip(NAMES, tensors, expected):
        assert torch.isfinite(t.grad).all(), f"grad_{name} overflowed"
        err = (t.grad.cpu().double() - e.grad).abs().max().item()
        assert err <= 1e-2 * e.grad.abs().max().item(), f"grad_{name}: max error {err:.3g}"


# -- gradcheck, registration ----------------------------------------------------


@pytest.mark.parametrize("case", ["self", "cross", "no_gate", "empty_batch", "non_contiguous", "channels_last"])
def test_gradcheck(case):
    # The reference only: the kernels' gradients are checked against it above (gradcheck
    # of the interpreted kernels takes minutes).
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


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("gate", [True, False])
def test_double_backward(backend, device, gate):
    """Every backend differentiates its gradients (issue 12: a compiled backward op has no derivative;
    the Triton op's first-order gradients run through the reference under create_graph=True)."""
    tensors = make(1, 3, 2, (2, 3), (3, 2), gate)
    check_double_backward("efficient_attention", backend, device,
                          lambda be, *ts: efficient_attention(*ts, backend=be), tensors)


def test_triton_refuses_too_many_maps():
    value, key, query, g = make(1, 2, TRITON_MAX_MAPS + 1, (2, 2), (2, 2), dtype=torch.float32)
    why = OP.refusal("triton", value.device, value.dtype, value, key, query, g)
    assert why is not None and f"C2 = {TRITON_MAX_MAPS + 1} maps" in why


def test_reference_memory_is_linear_in_positions():
    # A 256x256 self-attention would need a 65536^2 matrix (16 GiB); the reference must not form it
    # (the Triton kernels' memory is measured at 4K on the GPU below).
    value, key, query, g = make(1, 8, 4, (256, 256), (256, 256), dtype=torch.float32)
    out = efficient_attention(value, key, query, g, backend="reference")
    assert out.shape == (1, 8, 256, 256)


@pytest.mark.cuda
def test_triton_4k_memory_is_linear():
    # Issue 4's target: 4K (3840x2160) 64-channel self-attention, forward + backward, on one GPU,
    # with peak memory a small multiple of the tensors themselves (no L x L, no (C, C2, L)).
    require_backend("efficient_attention", "triton", "cuda", torch.float16)
    n, c, c2, h, w = 1, 64, 32, 2160, 3840
    value, key, query, g = (leaf(t) for t in make(n, c, c2, (h, w), (h, w), True, torch.float16, "cuda"))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = efficient_attention(value, key, query, g, backend="triton")
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    tensor_bytes = 2 * n * (c + c2) * h * w * 2 * 2  # inputs' gradients, output and its gradient, generously
    assert peak <= 1.5 * tensor_bytes, f"peak {peak / 2**30:.2f} GiB for {tensor_bytes / 2**30:.2f} GiB of tensors"
    assert torch.isfinite(value.grad).all() and torch.isfinite(key.grad).all()


@pytest.mark.cuda
def test_triton_wide_channels_on_gpu():
    # C=160 takes two channel blocks on the GPU tiles (d_query unfused), C2=128 the widest map tile.
    require_backend("efficient_attention", "triton", "cuda", torch.float32)
    tensors = make(2, 160, 128, (33, 47), (20, 30), True, torch.float32, "cuda")
    assert_matches_reference("triton", "cuda", tensors, torch.float32)


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
