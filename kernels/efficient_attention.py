"""Triton kernels of efficient_attention (ops.md §3): forward and backward.

Notation: value V (C, Lin), key K (C2, Lin), query Q (C2, Lout), gate g (C) per
batch element n; P = softmax of K over the Lin positions, S = softmax of Q over
the C2 maps; ctx = V P^T (C, C2); out = g * (ctx S).

Forward, three launches:
  1. ctx_partial: program (n, channel block, split) runs an online (max-safe)
     softmax over its chunk of positions: partial max m_s and sum of
     exponentials l_s per map, partial un-normalized context V exp(K - m_s)^T.
  2. ctx_combine: program (n, channel block) rescales the partials to the
     global max M (exp(m_s - M)), sums them, divides by the sum: ctx, and M
     and the sum per map (for the backward).
  3. out: program (n, Lout tile) takes the softmax of its query columns over
     C2 in registers and multiplies ctx by it, gate fused.
Backward: with A = G S^T (C, C2) reduced over Lout (split + combine as above),
  d_gate = sum_k ctx A;  d_ctx = g A;  d_value = d_ctx P;
  d_key = P * (d_ctx^T V - D) with D[k] = sum_c d_ctx ctx (= sum_i P dP),
  the last two with P and d_ctx rescaled by the softmax's denominator so that
  float16 operands cannot overflow (see bwd_ctx_combine);
  d_query = S * (dS - sum_k S dS) with dS = (g ctx)^T G.
The backward recomputes ctx (one more read of V and K) rather than saving it,
so the op's autograd saves only its inputs; then it reads G and Q once (A and,
when one channel block holds all C, d_query in the same pass) and V and K once.
Temporaries are (N, C, C2) and the (N, S, C, C2) partials, S about two
programs per SM over N * channel blocks whatever L is: memory O(N (C + C2) L),
never an L x L or (C, C2, L) tensor. No atomics: a second kernel combines the
partials in a fixed order, so results are bitwise reproducible.
Matmuls use tl.dot on tiles >= 16 in each dimension: inputs in float16/bfloat16
with float32 accumulation; float32 in IEEE precision (no TF32); float64 in float64.
"""

import torch
import triton
import triton.language as tl

from ._triton_common import acc_dtype, on_device, tl_dot, tl_dtype

INTERPRETER_SMS = 4  # splits under the interpreter as if on a GPU this size (small, so tests see several)


@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    """a @ b with both operands cast to DOT: float16/bfloat16 on tensor cores with
    float32 accumulation; float32 in IEEE precision (TF32 would cost 1e-3); float64 in float64."""
    a, b = a.to(DOT), b.to(DOT)
    if DOT == tl.float16 or DOT == tl.bfloat16:
        return tl.dot(a, b)
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _softmax(b_x, m_x, AXIS: tl.constexpr):
    """Softmax of b_x along AXIS (a 2-D tile), over the entries m_x marks (the others give 0)."""
    b_x = tl.where(m_x, b_x, float("-inf"))
    b_x = tl.exp(b_x - tl.expand_dims(tl.max(b_x, axis=AXIS), AXIS))
    return b_x / tl.expand_dims(tl.sum(b_x, axis=AXIS), AXIS)


@triton.jit
def _softmax_backward(b_s, b_ds, AXIS: tl.constexpr):
    """Gradient of the logits of the softmax b_s given the gradient b_ds of b_s."""
    return b_s * (b_ds - tl.expand_dims(tl.sum(b_s * b_ds, axis=AXIS), AXIS))


@triton.jit
def _program(n_inner, n_mid):
    """(outer, middle, inner) indices of this program on one grid axis (axes 1, 2 are limited to 65535)."""
    i_p = tl.program_id(0)
    return i_p // (n_inner * n_mid), (i_p // n_inner) % n_mid, i_p % n_inner


@triton.jit
def _program2(n_inner):
    """(outer, inner) indices of this program on one grid axis."""
    i_p = tl.program_id(0)
    return i_p // n_inner, i_p % n_inner


@triton.jit
def efficient_attention_ctx_partial_kernel(
    v, k,  # [N, C, L], [N, C2, L], strided
    part_ctx, part_m, part_l,  # [N, S, C, C2], [N, S, C2], [N, S, C2] in ACC
    C, C2, L, S, TPS,  # S splits of TPS tiles of BLOCK_L positions each
    s_vn, s_vc, s_vl, s_kn, s_kc, s_kl,
    DOT: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr,
):
    i_n, i_cb, i_s = _program(S, tl.cdiv(C, BLOCK_C))
    o_c = i_cb * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < C
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    p_v = v + i_n.to(tl.int64) * s_vn + o_c.to(tl.int64)[:, None] * s_vc  # [BLOCK_C, 1]
    p_k = k + i_n.to(tl.int64) * s_kn + o_k.to(tl.int64)[:, None] * s_kc  # [BLOCK_K, 1]

    b_m = tl.full([BLOCK_K], float("-inf"), ACC)  # running max per map
    b_l = tl.zeros([BLOCK_K], ACC)  # running sum of exp(k - b_m)
    b_acc = tl.zeros([BLOCK_C, BLOCK_K], ACC)  # running sum of v exp(k - b_m)
    lo = i_s * TPS * BLOCK_L
    hi = tl.minimum(L, lo + TPS * BLOCK_L)
    for start in range(lo, hi, BLOCK_L):
        o_l = start + tl.arange(0, BLOCK_L)  # [BLOCK_L]
        m_l = o_l < L
        # the key tile as it lies in memory, [maps, positions] (lanes along the positions), transposed for
        # the dot in registers
        b_k = tl.load(p_k + o_l.to(tl.int64)[None, :] * s_kl, mask=m_k[:, None] & m_l[None, :], other=0.0)
        b_k = tl.where(m_l[None, :], b_k.to(ACC), float("-inf"))  # [BLOCK_K, BLOCK_L]
        b_mn = tl.maximum(b_m, tl.max(b_k, axis=1))
        # shift by 0 while a map has seen no finite logit: exp(-inf - -inf) would be NaN
        b_shift = tl.where(b_mn == float("-inf"), 0.0, b_mn)
        b_alpha = tl.exp(b_m - b_shift)  # [BLOCK_K] rescales what was summed under the old max
        b_p = tl.exp(b_k - b_shift[:, None])  # [BLOCK_K, BLOCK_L]
        b_l = b_l * b_alpha + tl.sum(b_p, axis=1)
        m_cl = m_c[:, None] & m_l[None, :]
        b_v = tl.load(p_v + o_l.to(tl.int64)[None, :] * s_vl, mask=m_cl, other=0.0)  # [BLOCK_C, BLOCK_L]
        b_acc = b_acc * b_alpha[None, :] + _dot(b_v, tl.trans(b_p), DOT)
        b_m = b_mn

    o_ns = i_n.to(tl.int64) * S + i_s
    p_pc = part_ctx + (o_ns * C + o_c)[:, None] * C2 + o_k[None, :]
    tl.store(p_pc, b_acc, mask=m_c[:, None] & m_k[None, :])
    if i_cb == 0:  # every channel block computes the same statistics
        tl.store(part_m + o_ns * C2 + o_k, b_m, mask=m_k)
        tl.store(part_l + o_ns * C2 + o_k, b_l, mask=m_k)


@triton.jit
def _rows(o_n, s0, S, BLOCK_S: tl.constexpr):
    """Rows n * S + s0 .. of an [N, S, ...] partial (o_n = n * S) as [BLOCK_S] indices, and their mask."""
    return o_n + s0 + tl.arange(0, BLOCK_S), s0 + tl.arange(0, BLOCK_S) < S


@triton.jit
def efficient_attention_ctx_combine_kernel(
    part_ctx, part_m, part_l, ctx, mx, den,  # partials as above; ctx [N, C, C2]; mx, den [N, C2]; all in ACC
    C, C2, S,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Sums BLOCK_S splits per step (loads wide enough to keep the memory busy)
    in a fixed order: deterministic."""
    i_n, i_cb = _program2(tl.cdiv(C, BLOCK_C))
    o_c = i_cb * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < C
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    o_n = i_n.to(tl.int64) * S

    b_max = tl.full([BLOCK_K], float("-inf"), ACC)  # [BLOCK_K] global max per map
    for s0 in range(0, S, BLOCK_S):
        o_s, m_s = _rows(o_n, s0, S, BLOCK_S)  # [BLOCK_S]
        p_m = part_m + o_s[:, None] * C2 + o_k[None, :]
        b_max = tl.maximum(b_max, tl.max(tl.load(p_m, mask=m_s[:, None] & m_k[None, :], other=float("-inf")), axis=0))
    b_shift = tl.where(b_max == float("-inf"), 0.0, b_max)
    b_l = tl.zeros([BLOCK_K], ACC)  # [BLOCK_K]
    b_acc = tl.zeros([BLOCK_C, BLOCK_K], ACC)  # [BLOCK_C, BLOCK_K]
    for s0 in range(0, S, BLOCK_S):
        o_s, m_s = _rows(o_n, s0, S, BLOCK_S)  # [BLOCK_S]
        o_sk, m_sk = o_s[:, None] * C2 + o_k[None, :], m_s[:, None] & m_k[None, :]  # [BLOCK_S, BLOCK_K]
        # weight exp(m_s - M) of each split; 0 for padding rows and splits with no finite logit
        b_w = tl.exp(tl.load(part_m + o_sk, mask=m_sk, other=float("-inf")) - b_shift[None, :])  # [BLOCK_S, BLOCK_K]
        b_l += tl.sum(b_w * tl.load(part_l + o_sk, mask=m_sk, other=0.0), axis=0)
        p_pc = part_ctx + (o_s[:, None, None] * C + o_c[None, :, None]) * C2 + o_k[None, None, :]
        m_pc = m_s[:, None, None] & m_c[None, :, None] & m_k[None, None, :]
        b_pc = tl.load(p_pc, mask=m_pc, other=0.0)  # [BLOCK_S, BLOCK_C, BLOCK_K]
        b_acc += tl.sum(b_w[:, None, :] * b_pc, axis=0)
    b_l = tl.where(m_k, b_l, 1.0)  # padding maps: avoid 0/0
    p_ctx = ctx + (i_n.to(tl.int64) * C + o_c)[:, None] * C2 + o_k[None, :]
    tl.store(p_ctx, b_acc / b_l[None, :], mask=m_c[:, None] & m_k[None, :])
    if i_cb == 0:
        tl.store(mx + i_n.to(tl.int64) * C2 + o_k, b_shift, mask=m_k)
        tl.store(den + i_n.to(tl.int64) * C2 + o_k, b_l, mask=m_k)


@triton.jit
def efficient_attention_out_kernel(
    q, ctx, gate, out,  # q [N, C2, L] strided; ctx [N, C, C2] in ACC; gate [N, C]; out [N, C, L] strided
    C, C2, L,
    s_qn, s_qc, s_ql, s_on, s_oc, s_ol,
    HAS_GATE: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr,
):
    i_n, i_l = _program2(tl.cdiv(L, BLOCK_L))
    o_l = i_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L]
    m_l = o_l < L
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    p_q = q + i_n.to(tl.int64) * s_qn + o_k.to(tl.int64)[:, None] * s_qc + o_l.to(tl.int64)[None, :] * s_ql
    b_q = tl.load(p_q, mask=m_k[:, None] & m_l[None, :], other=0.0).to(ACC)  # [BLOCK_K, BLOCK_L]
    b_s = _softmax(b_q, m_k[:, None], 0)  # [BLOCK_K, BLOCK_L] softmax over the maps
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        m_c = o_c < C
        o_nc = i_n.to(tl.int64) * C + o_c  # [BLOCK_C]
        p_ctx = ctx + o_nc[:, None] * C2 + o_k[None, :]
        b_ctx = tl.load(p_ctx, mask=m_c[:, None] & m_k[None, :], other=0.0)  # [BLOCK_C, BLOCK_K]
        b_o = _dot(b_ctx, b_s, DOT)  # [BLOCK_C, BLOCK_L]
        if HAS_GATE:
            b_o *= tl.load(gate + o_nc, mask=m_c, other=0.0).to(ACC)[:, None]
        p_o = out + i_n.to(tl.int64) * s_on + o_c.to(tl.int64)[:, None] * s_oc + o_l.to(tl.int64)[None, :] * s_ol
        tl.store(p_o, b_o.to(out.dtype.element_ty), mask=m_c[:, None] & m_l[None, :])


@triton.jit
def _query_column_softmax(q, i_n, o_l, m_l, o_k, m_k, s_qn, s_qc, s_ql, ACC: tl.constexpr):
    """softmax over the maps of the query columns o_l, as a [BLOCK_L, BLOCK_K] tile (loaded as it lies in
    memory, [maps, positions] with lanes along the positions, and transposed in registers)."""
    p_q = q + i_n.to(tl.int64) * s_qn + o_k.to(tl.int64)[:, None] * s_qc + o_l.to(tl.int64)[None, :] * s_ql
    b_q = tl.load(p_q, mask=m_k[:, None] & m_l[None, :], other=0.0).to(ACC)  # [BLOCK_K, BLOCK_L]
    return tl.trans(_softmax(b_q, m_k[:, None], 0))


@triton.jit
def _gated_ctx(ctx, gate, i_n, o_c, m_c, o_k, m_k, C, C2, HAS_GATE: tl.constexpr):
    """g * ctx for channels o_c, a [BLOCK_C, BLOCK_K] tile in ctx's dtype."""
    o_nc = i_n.to(tl.int64) * C + o_c
    b_cg = tl.load(ctx + o_nc[:, None] * C2 + o_k[None, :], mask=m_c[:, None] & m_k[None, :], other=0.0)
    if HAS_GATE:
        b_cg *= tl.load(gate + o_nc, mask=m_c, other=0.0).to(b_cg.dtype)[:, None]
    return b_cg


@triton.jit
def efficient_attention_bwd_ctx_partial_kernel(
    go, q,  # [N, C, L], [N, C2, L], strided
    ctx, gate, part_a, grad_q,  # [N, C, C2] in ACC, [N, C], [N, S, C, C2] in ACC, [N, C2, L]
    C, C2, L, S, TPS,
    s_gn, s_gc, s_gl, s_qn, s_qc, s_ql,
    HAS_GATE: tl.constexpr, FUSE_GRAD_Q: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Partial A = G S^T over a chunk of Lout positions. With FUSE_GRAD_Q (one
    channel block holds all C) it also writes d_query of those positions, so
    the output gradient is read once."""
    i_n, i_cb, i_s = _program(S, tl.cdiv(C, BLOCK_C))
    o_c = i_cb * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < C
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    p_g = go + i_n.to(tl.int64) * s_gn + o_c.to(tl.int64)[:, None] * s_gc  # [BLOCK_C, 1]
    if FUSE_GRAD_Q:
        b_cg = _gated_ctx(ctx, gate, i_n, o_c, m_c, o_k, m_k, C, C2, HAS_GATE).to(DOT)  # [BLOCK_C, BLOCK_K]

    b_a = tl.zeros([BLOCK_C, BLOCK_K], ACC)
    lo = i_s * TPS * BLOCK_L
    hi = tl.minimum(L, lo + TPS * BLOCK_L)
    for start in range(lo, hi, BLOCK_L):
        o_l = start + tl.arange(0, BLOCK_L)  # [BLOCK_L]
        m_l = o_l < L
        b_st = _query_column_softmax(q, i_n, o_l, m_l, o_k, m_k, s_qn, s_qc, s_ql, ACC)  # [BLOCK_L, BLOCK_K]
        m_cl = m_c[:, None] & m_l[None, :]
        b_g = tl.load(p_g + o_l.to(tl.int64)[None, :] * s_gl, mask=m_cl, other=0.0)  # [BLOCK_C, BLOCK_L]
        b_a += _dot(b_g, b_st, DOT)
        if FUSE_GRAD_Q:
            b_ds = _dot(tl.trans(b_g), b_cg, DOT)  # [BLOCK_L, BLOCK_K]
            b_dq = _softmax_backward(b_st, b_ds, 1)
            p_dq = grad_q + (i_n.to(tl.int64) * C2 + o_k)[None, :] * L + o_l[:, None]
            tl.store(p_dq, b_dq.to(grad_q.dtype.element_ty), mask=m_l[:, None] & m_k[None, :])

    p_pa = part_a + ((i_n.to(tl.int64) * S + i_s) * C + o_c)[:, None] * C2 + o_k[None, :]
    tl.store(p_pa, b_a, mask=m_c[:, None] & m_k[None, :])


@triton.jit
def efficient_attention_bwd_ctx_combine_kernel(
    part_a, ctx, den, gate,  # [N, S, C, C2], [N, C, C2], [N, C2] in ACC; [N, C]
    dctx, grad_gate, part_d,  # [N, C, C2] in ACC; [N, C]; [N, n_cb, C2] in ACC
    C, C2, S,
    HAS_GATE: tl.constexpr, NEED_GATE: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """A = sum of the partials (fixed order); d_gate = sum_k ctx A; d_ctx' = g A / den
    and this channel block's share of D'[k] = sum_c d_ctx' ctx. Dividing by den
    (the softmax's sum of exponentials) keeps d_ctx' within float16's range
    where d_ctx, a sum over all Lout positions, may not be (d_value = d_ctx' P')."""
    n_cb = tl.cdiv(C, BLOCK_C)
    i_n, i_cb = _program2(n_cb)
    o_c = i_cb * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < C
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    m_ck = m_c[:, None] & m_k[None, :]
    o_n = i_n.to(tl.int64) * S
    b_a = tl.zeros([BLOCK_C, BLOCK_K], ACC)  # [BLOCK_C, BLOCK_K]
    for s0 in range(0, S, BLOCK_S):
        o_s, m_s = _rows(o_n, s0, S, BLOCK_S)  # [BLOCK_S]
        p_pa = part_a + (o_s[:, None, None] * C + o_c[None, :, None]) * C2 + o_k[None, None, :]
        m_pa = m_s[:, None, None] & m_c[None, :, None] & m_k[None, None, :]
        b_a += tl.sum(tl.load(p_pa, mask=m_pa, other=0.0), axis=0)  # [BLOCK_S, BLOCK_C, BLOCK_K] summed
    o_nc = i_n.to(tl.int64) * C + o_c  # [BLOCK_C]
    b_ctx = tl.load(ctx + o_nc[:, None] * C2 + o_k[None, :], mask=m_ck, other=0.0)  # [BLOCK_C, BLOCK_K]
    if NEED_GATE:
        tl.store(grad_gate + o_nc, tl.sum(b_ctx * b_a, axis=1).to(grad_gate.dtype.element_ty), mask=m_c)
    if HAS_GATE:
        b_a *= tl.load(gate + o_nc, mask=m_c, other=0.0).to(ACC)[:, None]
    b_a /= tl.load(den + i_n.to(tl.int64) * C2 + o_k, mask=m_k, other=1.0)[None, :]
    tl.store(dctx + o_nc[:, None] * C2 + o_k[None, :], b_a, mask=m_ck)
    tl.store(part_d + (i_n.to(tl.int64) * n_cb + i_cb) * C2 + o_k, tl.sum(b_a * b_ctx, axis=0), mask=m_k)


@triton.jit
def efficient_attention_bwd_query_kernel(
    go, q, ctx, gate, grad_q,  # go [N, C, L], q [N, C2, L] strided; ctx [N, C, C2]; grad_q [N, C2, L]
    C, C2, L,
    s_gn, s_gc, s_gl, s_qn, s_qc, s_ql,
    HAS_GATE: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """d_query of one tile of Lout positions, summing dS over all channel blocks."""
    i_n, i_l = _program2(tl.cdiv(L, BLOCK_L))
    o_l = i_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L]
    m_l = o_l < L
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    b_st = _query_column_softmax(q, i_n, o_l, m_l, o_k, m_k, s_qn, s_qc, s_ql, ACC)  # [BLOCK_L, BLOCK_K]
    b_ds = tl.zeros([BLOCK_L, BLOCK_K], ACC)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        m_c = o_c < C
        p_g = go + i_n.to(tl.int64) * s_gn + o_c.to(tl.int64)[:, None] * s_gc + o_l.to(tl.int64)[None, :] * s_gl
        b_g = tl.load(p_g, mask=m_c[:, None] & m_l[None, :], other=0.0)  # [BLOCK_C, BLOCK_L]
        b_cg = _gated_ctx(ctx, gate, i_n, o_c, m_c, o_k, m_k, C, C2, HAS_GATE).to(DOT)  # [BLOCK_C, BLOCK_K]
        b_ds += _dot(tl.trans(b_g), b_cg, DOT)
    b_dq = _softmax_backward(b_st, b_ds, 1)  # [BLOCK_L, BLOCK_K]
    p_dq = grad_q + (i_n.to(tl.int64) * C2 + o_k)[None, :] * L + o_l[:, None]
    tl.store(p_dq, b_dq.to(grad_q.dtype.element_ty), mask=m_l[:, None] & m_k[None, :])


@triton.jit
def efficient_attention_bwd_kv_kernel(
    v, k,  # [N, C, L], [N, C2, L], strided
    mx, dctx, part_d,  # [N, C2], [N, C, C2], [N, NCB_D, C2] in ACC
    grad_v, grad_k,  # [N, C, L], [N, C2, L], contiguous
    C, C2, L, NCB_D,
    s_vn, s_vc, s_vl, s_kn, s_kc, s_kl,
    NEED_V: tl.constexpr, NEED_K: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """d_value = d_ctx P and d_key = P (d_ctx^T V - D) for one tile of Lin positions,
    computed as d_value = d_ctx' P' and d_key = P' (d_ctx'^T V - D') with P' = P den
    = exp(K - max) and d_ctx' = d_ctx / den, D' = D / den (what dctx and part_d hold)."""
    i_n, i_l = _program2(tl.cdiv(L, BLOCK_L))
    o_l = i_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L]
    m_l = o_l < L
    o_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_k = o_k < C2
    m_kl = m_k[:, None] & m_l[None, :]
    p_k = k + i_n.to(tl.int64) * s_kn + o_k.to(tl.int64)[:, None] * s_kc + o_l.to(tl.int64)[None, :] * s_kl
    b_k = tl.load(p_k, mask=m_kl, other=0.0).to(ACC)  # [BLOCK_K, BLOCK_L]
    b_mx = tl.load(mx + i_n.to(tl.int64) * C2 + o_k, mask=m_k, other=0.0)  # [BLOCK_K]
    b_p = tl.where(m_kl, tl.exp(b_k - b_mx[:, None]), 0.0)  # [BLOCK_K, BLOCK_L] P * den, in [0, 1]
    b_dp = tl.zeros([BLOCK_K, BLOCK_L], ACC)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        m_c = o_c < C
        o_nc = i_n.to(tl.int64) * C + o_c  # [BLOCK_C]
        b_dc = tl.load(dctx + o_nc[:, None] * C2 + o_k[None, :], mask=m_c[:, None] & m_k[None, :], other=0.0)
        b_dc = b_dc.to(DOT)  # [BLOCK_C, BLOCK_K]
        if NEED_V:
            b_dv = _dot(b_dc, b_p, DOT)  # [BLOCK_C, BLOCK_L]
            tl.store(grad_v + o_nc[:, None] * L + o_l[None, :], b_dv.to(grad_v.dtype.element_ty),
                     mask=m_c[:, None] & m_l[None, :])
        if NEED_K:
            p_v = v + i_n.to(tl.int64) * s_vn + o_c.to(tl.int64)[:, None] * s_vc + o_l.to(tl.int64)[None, :] * s_vl
            b_v = tl.load(p_v, mask=m_c[:, None] & m_l[None, :], other=0.0)  # [BLOCK_C, BLOCK_L]
            b_dp += _dot(tl.trans(b_dc), b_v, DOT)
    if NEED_K:
        b_d = tl.zeros([BLOCK_K], ACC)  # [BLOCK_K] D'[k], from the combine's per-block shares
        for r0 in range(0, NCB_D, BLOCK_S):
            o_r, m_r = _rows(i_n.to(tl.int64) * NCB_D, r0, NCB_D, BLOCK_S)  # [BLOCK_S]
            p_d = part_d + o_r[:, None] * C2 + o_k[None, :]
            b_d += tl.sum(tl.load(p_d, mask=m_r[:, None] & m_k[None, :], other=0.0), axis=0)  # [BLOCK_S, BLOCK_K]
        b_dk = b_p * (b_dp - b_d[:, None])  # [BLOCK_K, BLOCK_L]
        tl.store(grad_k + (i_n.to(tl.int64) * C2 + o_k)[:, None] * L + o_l[None, :], b_dk.to(grad_k.dtype.element_ty),
                 mask=m_kl)


# -- host side ----------------------------------------------------------------


def dtype_consts(dtype: torch.dtype, device: torch.device) -> dict:
    """ACC: accumulation dtype; DOT: tl.dot operand dtype."""
    return {"ACC": tl_dtype(acc_dtype(dtype)), "DOT": tl_dot(dtype)}


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) as (N, C, L), a view whenever the spatial dims merge (contiguous, channels_last)."""
    L = 1
    for s in t.shape[2:]:
        L *= s
    try:
        return t.view(t.shape[0], t.shape[1], L)
    except RuntimeError:
        return t.reshape(t.shape[0], t.shape[1], L)


def config(C: int, C2: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Tile sizes (every tl.dot dimension >= 16). COMBINE_C, BLOCK_S: channels
    and partials per step of the combine kernels (few channels: many programs,
    many partials: wide loads). Under the interpreter the smallest tiles, so
    tiny test shapes span several channel blocks, tiles and combine steps."""
    block_k = max(16, triton.next_power_of_2(C2))
    if device.type != "cuda":
        return {"BLOCK_C": 16, "BLOCK_K": block_k, "BLOCK_L": 16, "COMBINE_C": 8, "BLOCK_S": 2, "num_warps": 4,
                "num_stages": 1}
    budget = 2048 if dtype == torch.float64 else 4096  # elements of the [BLOCK_C, BLOCK_K] accumulator
    block_c = max(16, min(triton.next_power_of_2(max(C, 1)), 128, budget // block_k))
    # float32's products run on FMAs (ieee), holding more in registers than the tensor cores' half types:
    # 64 positions a tile spilled up to 4.5 KB a thread on sm_90 (14 of 22 float32 configurations),
    # 32 on 8 warps up to 160 B (6); 32 positions of float32 are still one 128 B line a row.
    block_l = 64 if dtype in (torch.float16, torch.bfloat16) else 32
    warps = 8 if dtype == torch.float32 or block_c * block_k >= 4096 else 4
    # float32 without software pipelining: the staged loads cost the FMA products' registers (at 3 stages
    # 6 float32 configurations kept a stack frame on sm_90; at 1 stage the kv gradient's did, see tiles())
    stages = 1 if dtype == torch.float32 else 3
    return {"BLOCK_C": block_c, "BLOCK_K": block_k, "BLOCK_L": block_l, "COMBINE_C": 4,
            "BLOCK_S": max(1, min(32, 4096 // (4 * block_k))), "num_warps": warps, "num_stages": stages}


def _sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_SMS


def splits(L: int, block_l: int, programs: int, device: torch.device) -> tuple[int, int]:
    """(S, tiles per split) of a reduction over L positions split across
    programs: about two programs per SM over the `programs` (n, channel block) pairs."""
    tiles = triton.cdiv(L, block_l)
    target = max(1, min(tiles, triton.cdiv(2 * _sms(device), max(programs, 1))))
    tps = triton.cdiv(tiles, target)
    return triton.cdiv(tiles, tps), tps


def tiles(cfg: dict, kv_gradient: bool = False) -> dict:
    """The launch's tile constexprs and options; the kv gradient keeps 3 stages (at 1, float32 with
    C2 = 128 spilled 264 B a thread on sm_90, at 3 none)."""
    return {**{k: cfg[k] for k in ("BLOCK_C", "BLOCK_K", "BLOCK_L", "num_warps", "num_stages")},
            **({"num_stages": 3} if kv_gradient else {})}


def _context(v, k, cfg, consts):
    """ctx [N, C, C2] = V softmax_L(K)^T, and K's max and sum of exp(K - max) over L
    [N, C2], in the accumulation dtype."""
    N, C, L = v.shape
    C2 = k.shape[1]
    n_cb = triton.cdiv(C, cfg["BLOCK_C"])
    S, tps = splits(L, cfg["BLOCK_L"], N * n_cb, v.device)
    new = lambda *shape: torch.empty(shape, dtype=acc_dtype(v.dtype), device=v.device)  # noqa: E731
    part_ctx, part_m, part_l = new(N, S, C, C2), new(N, S, C2), new(N, S, C2)
    ctx, mx, den = new(N, C, C2), new(N, C2), new(N, C2)
    efficient_attention_ctx_partial_kernel[(N * n_cb * S,)](
        v, k, part_ctx, part_m, part_l, C, C2, L, S, tps, *v.stride(), *k.stride(), **consts, **tiles(cfg),
    )
    efficient_attention_ctx_combine_kernel[(N * triton.cdiv(C, cfg["COMBINE_C"]),)](
        part_ctx, part_m, part_l, ctx, mx, den, C, C2, S,
        ACC=consts["ACC"], BLOCK_C=cfg["COMBINE_C"], BLOCK_K=cfg["BLOCK_K"], BLOCK_S=cfg["BLOCK_S"],
    )
    return ctx, mx, den


def _degenerate(N, C, C2, Lin, Lout) -> bool:
    """Nothing to launch: the output is empty or identically zero (no positions or no maps)."""
    return 0 in (N, C, C2, Lin, Lout)


def forward(value, key, query, gate, memory_format=torch.contiguous_format):
    N, C = value.shape[:2]
    out = torch.empty((N, C, *query.shape[2:]), dtype=value.dtype, device=value.device, memory_format=memory_format)
    v, k, q, o = _flat(value), _flat(key), _flat(query), _flat(out)
    C2, Lin, Lout = k.shape[1], v.shape[2], q.shape[2]
    if _degenerate(N, C, C2, Lin, Lout):
        return out.zero_()
    cfg, consts = config(C, C2, value.dtype, value.device), dtype_consts(value.dtype, value.device)
    with on_device(value):
        ctx, _, _ = _context(v, k, cfg, consts)
        efficient_attention_out_kernel[(N * triton.cdiv(Lout, cfg["BLOCK_L"]),)](
            q, ctx, gate.contiguous() if gate is not None else ctx, o, C, C2, Lout, *q.stride(), *o.stride(),
            HAS_GATE=gate is not None, **consts, **tiles(cfg),
        )
    return out


def backward(grad_out, value, key, query, gate, output_mask):
    need_v, need_k, need_q, need_g = (bool(m) for m in output_mask)
    need_g = need_g and gate is not None
    grad_v, grad_k, grad_q, grad_g = (
        torch.empty(t.shape, dtype=t.dtype, device=t.device) if need else value.new_empty(0)
        for t, need in ((value, need_v), (key, need_k), (query, need_q), (gate, need_g))
    )
    v, k, q, go = _flat(value), _flat(key), _flat(query), _flat(grad_out)
    N, C, Lin = v.shape
    C2, Lout = k.shape[1], q.shape[2]
    if _degenerate(N, C, C2, Lin, Lout):  # the output is empty or constant zero: so are the gradients
        return grad_v.zero_(), grad_k.zero_(), grad_q.zero_(), grad_g.zero_()
    cfg, consts = config(C, C2, value.dtype, value.device), dtype_consts(value.dtype, value.device)
    has_gate = gate is not None
    n_cb = triton.cdiv(C, cfg["BLOCK_C"])
    new = lambda *shape: torch.empty(shape, dtype=acc_dtype(value.dtype), device=value.device)  # noqa: E731
    with on_device(value):
        ctx, mx, den = _context(v, k, cfg, consts)
        gate_c = gate.contiguous() if has_gate else ctx  # unused pointers get any tensor
        grad_q3 = grad_q.view(N, C2, Lout) if need_q else ctx
        # d_query rides along the reduction of A when one channel block holds all C
        fuse_q = need_q and n_cb == 1 and (need_v or need_k or need_g)
        if need_v or need_k or need_g:
            S, tps = splits(Lout, cfg["BLOCK_L"], N * n_cb, value.device)
            part_a = new(N, S, C, C2)
            efficient_attention_bwd_ctx_partial_kernel[(N * n_cb * S,)](
                go, q, ctx, gate_c, part_a, grad_q3, C, C2, Lout, S, tps, *go.stride(), *q.stride(),
                HAS_GATE=has_gate, FUSE_GRAD_Q=fuse_q, **consts, **tiles(cfg),
            )
            ncb_d = triton.cdiv(C, cfg["COMBINE_C"])
            dctx, part_d = new(N, C, C2), new(N, ncb_d, C2)
            efficient_attention_bwd_ctx_combine_kernel[(N * ncb_d,)](
                part_a, ctx, den, gate_c, dctx, grad_g if need_g else ctx, part_d, C, C2, S,
                HAS_GATE=has_gate, NEED_GATE=need_g, ACC=consts["ACC"], BLOCK_C=cfg["COMBINE_C"],
                BLOCK_K=cfg["BLOCK_K"], BLOCK_S=cfg["BLOCK_S"],
            )
            if need_v or need_k:
                efficient_attention_bwd_kv_kernel[(N * triton.cdiv(Lin, cfg["BLOCK_L"]),)](
                    v, k, mx, dctx, part_d, grad_v if need_v else ctx, grad_k if need_k else ctx,
                    C, C2, Lin, ncb_d, *v.stride(), *k.stride(), NEED_V=need_v, NEED_K=need_k,
                    BLOCK_S=cfg["BLOCK_S"], **consts, **tiles(cfg, kv_gradient=True),
                )
        if need_q and not fuse_q:
            efficient_attention_bwd_query_kernel[(N * triton.cdiv(Lout, cfg["BLOCK_L"]),)](
                go, q, ctx, gate_c, grad_q3, C, C2, Lout, *go.stride(), *q.stride(),
                HAS_GATE=has_gate, **consts, **tiles(cfg),
            )
    return grad_v, grad_k, grad_q, grad_g
