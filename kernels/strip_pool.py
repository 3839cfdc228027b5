"""Triton kernels of strip_pool / strip_expand (ops.md §4) and of BANet's fused
blur-aware-attention mask (shared/specs/models/banet.md, BA_Block steps 3-6).

Three kernel families, each used forward and backward:

- strip_reduce: one read of a stack of [H, W] planes, producing per plane the
  "v" map [H, KV] (bins along W, one value per row) and the "h" map [KH, W]
  (bins along H, one value per column). A bin is a set of positions given
  either by PyTorch's adaptive bins of every n in `sizes` (MODE_ADAPTIVE: the
  means of strip_pool) or by an index map position -> bin (MODE_INDEX: sums,
  the adjoint of a nearest expansion). Bin membership is a 0/1 matrix, so both
  reductions are matmuls: v = x @ M_w on [BLOCK_H, BLOCK_W] tiles and
  h = M_h^T @ x, on tensor cores for 16-bit inputs (0/1 weights and float32
  accumulation keep them exact; non-finite values are kept out of the matmuls
  and put back per bin by _bin_dot, so a NaN reaches only the bins it is in).
  A program owns one plane and a range of column tiles and walks down all rows,
  so h is complete when it stores it; v is complete over the range only: ranges
  write float32 partials that strip_reduce_finish sums (ranges exist to give the
  GPU enough programs).
- strip_spread: the adjoint, out[r, w] = sum_k v[r, k] M_w[w, k] + sum_k M_h[k, r] h[k, w]:
  gathers for an index map (strip_expand forward), matmuls with the scaled
  adaptive membership (strip_pool backward; tensor cores for 16-bit data, see
  _scaled_bin_dot). A program owns a column tile and a range of row tiles, so
  the column bins are built once per program. One write of the output.
- blur_aware_mask: out = x * sigmoid(Wt @ relu(A[r, ia[w]] + B[ib[r], w]) + b)
  in one pass over x. A [F, H, KA] and B [F, KB, W] are the small "row" and
  "column" tables (BANet: the strip convs and the 1x1 fuse conv already applied,
  see deblurfast.nn.BlurAwareAttention), ia / ib map columns / rows to table
  entries. The program gathers the [F, BLOCK_W] pre-activation of its pixels
  once and runs the 1x1 conv over channel blocks as a tl.dot. Its backward
  reads grad_out and x once and writes grad_x; the weight, bias and table
  gradients are reduced in the kernel into small per-program partials (see
  blur_aware_mask_bwd_kernel), so nothing of size [F, H, W] or [C, H, W] but
  grad_x goes through memory.

Accumulation is float32 (float64 for float64). No atomics: every output element
and every partial is written by exactly one program.
"""

import functools

import torch
import triton
import triton.language as tl

from deblurfast._device_constants import device_constant_cache

from ._triton_common import acc_dtype, on_device, tl_acc, tl_dot
from .limits import STRIP_POOL_MAX_SIZES

MODE_ADAPTIVE = 0  # bins = PyTorch's adaptive bins of each n in sizes; means
MODE_INDEX = 1  # bins given by an index map; sums

# Tile limits (tests lower them to reach multi-tile code paths on tiny inputs).
_MAX_BLOCK_W = 128
_MAX_BLOCK_H = 32
_SPREAD_WARPS = 8  # 4 spilled 136-160 B a thread on sm_90 in every dtype
_PROGRAMS_PER_SM = 4


# -- helpers -------------------------------------------------------------------------------------------


@triton.jit
def _adaptive_bins(o_k, L, S0, S1, S2, S3, S4, S5, S6, S7):
    """[lo, hi) of the concatenated adaptive bins o_k [K] of every size over a length L:
    bin j of n spans [floor(j L / n), ceil((j + 1) L / n)). Slots past the last size are empty.
    (Written out, not as a helper per size: every nested call is slow in the interpreter.)"""
    # slot o_k belongs to the first size whose end (running sum of sizes) exceeds it
    e0 = S0
    e1 = e0 + S1
    e2 = e1 + S2
    e3 = e2 + S3
    e4 = e3 + S4
    e5 = e4 + S5
    e6 = e5 + S6
    e7 = e6 + S7
    n_k = tl.where(o_k < e0, S0, tl.where(o_k < e1, S1, tl.where(o_k < e2, S2, tl.where(o_k < e3, S3, tl.where(
        o_k < e4, S4, tl.where(o_k < e5, S5, tl.where(o_k < e6, S6, tl.where(o_k < e7, S7, 0))))))))
    start = tl.where(o_k < e0, 0, tl.where(o_k < e1, e0, tl.where(o_k < e2, e1, tl.where(o_k < e3, e2, tl.where(
        o_k < e4, e3, tl.where(o_k < e5, e4, tl.where(o_k < e6, e5, e6)))))))
    j_k = o_k - start
    n1 = tl.maximum(n_k, 1)
    lo = (j_k * L) // n1
    hi = ((j_k + 1) * L + n1 - 1) // n1
    return lo, tl.where(n_k > 0, hi, lo)


@triton.jit
def _bin_scale(lo, hi, ACC: tl.constexpr):
    """1 / bin size ([K]); 0 for empty slots."""
    cnt = hi - lo
    return tl.where(cnt > 0, 1.0 / tl.maximum(cnt, 1).to(ACC), 0.0)


@triton.jit
def _finite_part(b_data):
    """b_data with its NaN and inf entries set to 0, and whether it had any: checked once per tile
    and shared by every product of the tile (each check is a pass over the tile in registers)."""
    finite = tl.abs(b_data) < float("inf")  # False for NaN too
    return tl.where(finite, b_data, 0.0).to(b_data.dtype), tl.sum((finite == 0).to(tl.int32)) > 0


@triton.jit
def _bin_dot(b_clean, b_data, any_nonfinite, b_bins, DATA_FIRST: tl.constexpr, NONFINITE: tl.constexpr):
    """b_data @ b_bins (DATA_FIRST) or b_bins @ b_data, where b_bins holds bin weights (finite,
    >= 0; zero: not in the bin), from (b_clean, any_nonfinite) = _finite_part(b_data): a NaN or inf
    datum reaches only the bins it is in, where a plain product would carry it into every bin as
    0 * inf = NaN. The non-finite data are taken out of the product and put back per bin by
    counting them (a rare branch). NONFINITE is True in every launch; the static report compiles the
    kernels without that branch too, to count the instructions of finite data (deblurfast.bench)."""
    if DATA_FIRST:
        b_out = tl.dot(b_clean, b_bins, input_precision="ieee")
    else:
        b_out = tl.dot(b_bins, b_clean, input_precision="ieee")
    if NONFINITE:
        if any_nonfinite:
            b_in = (b_bins != 0).to(b_bins.dtype)
            b_nan = (b_data != b_data).to(b_bins.dtype)
            b_pos = (b_data == float("inf")).to(b_bins.dtype)
            b_neg = (b_data == -float("inf")).to(b_bins.dtype)
            if DATA_FIRST:
                n_nan = tl.dot(b_nan, b_in, input_precision="ieee")
                n_pos = tl.dot(b_pos, b_in, input_precision="ieee")
                n_neg = tl.dot(b_neg, b_in, input_precision="ieee")
            else:
                n_nan = tl.dot(b_in, b_nan, input_precision="ieee")
                n_pos = tl.dot(b_in, b_pos, input_precision="ieee")
                n_neg = tl.dot(b_in, b_neg, input_precision="ieee")
            b_out = tl.where(n_pos > 0, float("inf"), b_out)
            b_out = tl.where(n_neg > 0, -float("inf"), b_out)
            b_out = tl.where((n_nan > 0) | ((n_pos > 0) & (n_neg > 0)), float("nan"), b_out)
    return b_out


@triton.jit
def _scaled_bin_dot(b_clean, b_data, any_nonfinite, b_bins, DATA_FIRST: tl.constexpr, DOT: tl.constexpr,
                    NONFINITE: tl.constexpr):
    """_bin_dot with bin weights 1 / |bin| (ACC) and data in DOT. For 16-bit DOT the weights go in as
    hi + lo, two DOT numbers whose sum carries 22 (float16) or 16 (bfloat16) bits of 1 / |bin|: the data
    are exact in DOT, so the tensor-core products are exact and accumulate in float32, where an ACC
    product ran on the FMA units (about 150 instructions per stored element on sm_90)."""
    b_hi = b_bins.to(DOT)
    b_out = _bin_dot(b_clean, b_data, any_nonfinite, b_hi, DATA_FIRST, NONFINITE)
    if DOT != b_bins.dtype:
        b_lo = (b_bins - b_hi.to(b_bins.dtype)).to(DOT)
        if DATA_FIRST:
            b_out += tl.dot(b_clean, b_lo, input_precision="ieee")
        else:
            b_out += tl.dot(b_lo, b_clean, input_precision="ieee")
    return b_out


@triton.jit
def _sigmoid(u):
    return 1.0 / (1.0 + tl.exp(-u))


# -- strip_reduce ----------------------------------------------------------------------------------------


@triton.jit
def strip_reduce_kernel(
    x, ws, h_out, idx_w, idx_h,  # x [P, H, W]; ws [P, n_ranges, H, KVP] (ACC); h_out plane p at p*h_stride, [KH, W]
    H, W, KV, KH, n_tiles, tiles_per_range, n_ranges, h_stride,
    S0, S1, S2, S3, S4, S5, S6, S7,
    MODE: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    KVP: tl.constexpr, KHP: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    NONFINITE: tl.constexpr,  # True; see _bin_dot
):
    pid = tl.program_id(0)
    i_r, i_p = pid % n_ranges, pid // n_ranges
    t0 = i_r * tiles_per_range
    t1 = tl.minimum(t0 + tiles_per_range, n_tiles)

    o_kv = tl.arange(0, KVP)  # [KVP] bins along W (v)
    o_kh = tl.arange(0, KHP)  # [KHP] bins along H (h)
    if MODE == 0:
        lo_w, hi_w = _adaptive_bins(o_kv, W, S0, S1, S2, S3, S4, S5, S6, S7)
        s_w = _bin_scale(lo_w, hi_w, ACC)  # [KVP]
        lo_h, hi_h = _adaptive_bins(o_kh, H, S0, S1, S2, S3, S4, S5, S6, S7)
        s_h = _bin_scale(lo_h, hi_h, ACC)  # [KHP]

    p_x = x + i_p.to(tl.int64) * H * W
    p_ws = ws + (i_p * n_ranges + i_r).to(tl.int64) * H * KVP
    p_h = h_out + i_p.to(tl.int64) * h_stride
    for t in range(t0, t1):
        o_w = t * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
        m_w = o_w < W
        if MODE == 0:
            m_wk = (o_w[:, None] >= lo_w[None, :]) & (o_w[:, None] < hi_w[None, :])  # [BLOCK_W, KVP]
        else:
            b_iw = tl.load(idx_w + o_w, mask=m_w, other=-1)  # [BLOCK_W]
            m_wk = b_iw[:, None] == o_kv[None, :]  # [BLOCK_W, KVP]
        m_wk = m_wk.to(DOT)
        # h transposed, x^T @ bins: the product bins @ x held ~130 more registers and spilled in the half types
        b_ht = tl.zeros([BLOCK_W, KHP], dtype=ACC)
        for r0 in range(0, H, BLOCK_H):
            o_r = r0 + tl.arange(0, BLOCK_H)  # [BLOCK_H]
            m_r = o_r < H
            b_x = tl.load(p_x + o_r[:, None] * W + o_w[None, :], mask=m_r[:, None] & m_w[None, :], other=0.0)
            b_x = b_x.to(DOT)  # [BLOCK_H, BLOCK_W]
            b_xc, x_nonfinite = _finite_part(b_x)
            if MODE == 0:
                m_rk = (o_r[:, None] >= lo_h[None, :]) & (o_r[:, None] < hi_h[None, :])  # [BLOCK_H, KHP]
            else:
                b_ih = tl.load(idx_h + o_r, mask=m_r, other=-1)  # [BLOCK_H]
                m_rk = b_ih[:, None] == o_kh[None, :]  # [BLOCK_H, KHP]
            b_ht += _bin_dot(tl.trans(b_xc), tl.trans(b_x), x_nonfinite, m_rk.to(DOT), True, NONFINITE).to(ACC)

            b_v = _bin_dot(b_xc, b_x, x_nonfinite, m_wk, True, NONFINITE).to(ACC)  # [BLOCK_H, KVP]
            if MODE == 0:
                b_v = b_v * s_w[None, :]
            p_v = p_ws + o_r[:, None] * KVP + o_kv[None, :]
            m_v = m_r[:, None] & (o_kv < KVP)[None, :]
            # the range's first tile initializes its partial, the others add to it (same program)
            if t > t0:
                b_v += tl.load(p_v, mask=m_v, other=0.0)
            tl.store(p_v, b_v, mask=m_v)
        b_h = tl.trans(b_ht)  # [KHP, BLOCK_W]
        if MODE == 0:
            b_h = b_h * s_h[:, None]
        p_ho = p_h + o_kh[:, None] * W + o_w[None, :]
        tl.store(p_ho, b_h.to(h_out.dtype.element_ty), mask=(o_kh < KH)[:, None] & m_w[None, :])


@triton.jit
def strip_reduce_finish_kernel(
    ws, v_out,  # ws [P, n_ranges, H, KVP] (ACC); v_out plane p at p*v_stride, [H, KV]
    H, KV, n_ranges, v_stride,
    ACC: tl.constexpr, KVP: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    n_hb = tl.cdiv(H, BLOCK_H)
    i_hb, i_p = pid % n_hb, pid // n_hb
    o_r = i_hb * BLOCK_H + tl.arange(0, BLOCK_H)  # [BLOCK_H]
    m_r = o_r < H
    o_k = tl.arange(0, KVP)  # [KVP]
    b_v = tl.zeros([BLOCK_H, KVP], dtype=ACC)
    for s in range(0, n_ranges):
        p_ws = ws + (i_p * n_ranges + s).to(tl.int64) * H * KVP + o_r[:, None] * KVP + o_k[None, :]
        b_v += tl.load(p_ws, mask=m_r[:, None] & (o_k < KVP)[None, :], other=0.0)
    p_v = v_out + i_p.to(tl.int64) * v_stride + o_r[:, None] * KV + o_k[None, :]
    tl.store(p_v, b_v.to(v_out.dtype.element_ty), mask=m_r[:, None] & (o_k < KV)[None, :])


# -- strip_spread ----------------------------------------------------------------------------------------


@triton.jit
def strip_spread_kernel(
    v, h, out, idx_w, idx_h,  # v plane p at p*v_stride, [H, KV]; h at p*h_stride, [KH, W]; out [P, H, W]
    H, W, KV, KH, v_stride, h_stride, tiles_per_range, n_ranges,
    S0, S1, S2, S3, S4, S5, S6, S7,
    MODE: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    KVP: tl.constexpr, KHP: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    NONFINITE: tl.constexpr,  # True; see _bin_dot
):
    """A program owns a column tile of one plane and walks down a range of row tiles: what depends on the
    columns only (their bins and weights, or their index map) is built once per program, not per tile."""
    pid = tl.program_id(0)
    n_wb = tl.cdiv(W, BLOCK_W)
    i_wb, i_rg, i_p = pid % n_wb, (pid // n_wb) % n_ranges, pid // (n_wb * n_ranges)
    o_w = i_wb * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    m_w = o_w < W
    p_v = v + i_p.to(tl.int64) * v_stride
    p_h = h + i_p.to(tl.int64) * h_stride
    p_out = out + i_p.to(tl.int64) * H * W
    o_kv = tl.arange(0, KVP)
    o_kh = tl.arange(0, KHP)
    if MODE == 0:
        # mean bins: the gradient of a mean spreads v / |bin| over the bin; pixels may sit in several bins
        lo_w, hi_w = _adaptive_bins(o_kv, W, S0, S1, S2, S3, S4, S5, S6, S7)
        m_kw = (o_w[None, :] >= lo_w[:, None]) & (o_w[None, :] < hi_w[:, None])  # [KVP, BLOCK_W]
        b_kw = m_kw.to(ACC) * _bin_scale(lo_w, hi_w, ACC)[:, None]
        lo_h, hi_h = _adaptive_bins(o_kh, H, S0, S1, S2, S3, S4, S5, S6, S7)
        s_h = _bin_scale(lo_h, hi_h, ACC)  # [KHP]
        b_h = tl.load(p_h + o_kh[:, None] * W + o_w[None, :], mask=(o_kh < KH)[:, None] & m_w[None, :], other=0.0)
        b_h = b_h.to(DOT)  # [KHP, BLOCK_W]: the column tile's h, read once
        b_hc, h_nonfinite = _finite_part(b_h)
    else:
        # nearest expansion: one source per pixel and axis; indices are clamped so no read leaves the maps
        b_iw = tl.minimum(tl.maximum(tl.load(idx_w + o_w, mask=m_w, other=0), 0), KV - 1)  # [BLOCK_W]
    r_end = tl.minimum((i_rg + 1) * tiles_per_range * BLOCK_H, H)
    for r0 in range(i_rg * tiles_per_range * BLOCK_H, r_end, BLOCK_H):
        o_r = r0 + tl.arange(0, BLOCK_H)  # [BLOCK_H]
        m_r = o_r < H
        m_o = m_r[:, None] & m_w[None, :]
        if MODE == 0:
            b_v = tl.load(p_v + o_r[:, None] * KV + o_kv[None, :], mask=m_r[:, None] & (o_kv < KV)[None, :],
                          other=0.0).to(DOT)  # [BLOCK_H, KVP]
            b_vc, v_nonfinite = _finite_part(b_v)
            b_o = _scaled_bin_dot(b_vc, b_v, v_nonfinite, b_kw, True, DOT, NONFINITE)  # [BLOCK_H, BLOCK_W]
            m_rk = (o_r[:, None] >= lo_h[None, :]) & (o_r[:, None] < hi_h[None, :])  # [BLOCK_H, KHP]
            b_o += _scaled_bin_dot(b_hc, b_h, h_nonfinite, m_rk.to(ACC) * s_h[None, :], False, DOT, NONFINITE)
        else:
            b_ih = tl.minimum(tl.maximum(tl.load(idx_h + o_r, mask=m_r, other=0), 0), KH - 1)  # [BLOCK_H]
            b_o = tl.load(p_v + o_r[:, None] * KV + b_iw[None, :], mask=m_o, other=0.0).to(ACC)  # [BLOCK_H, BLOCK_W]
            b_o += tl.load(p_h + b_ih[:, None] * W + o_w[None, :], mask=m_o, other=0.0).to(ACC)
        tl.store(p_out + o_r[:, None] * W + o_w[None, :], b_o.to(out.dtype.element_ty), mask=m_o)


# -- blur-aware attention mask ---------------------------------------------------------------------------


@triton.jit
def _clamped_index(p_index, o, m, K):
    """The table entries of the positions o ([BLOCK_W]), clamped to [0, K)."""
    return tl.minimum(tl.maximum(tl.load(p_index + o, mask=m, other=0), 0), K - 1)


@triton.jit
def _mask_preactivation(rows, cols, b_ia, b_ib, i_n, i_r, o_f, m_f, o_w, m_w, F, H, W, KA, KB, ACC: tl.constexpr):
    """A[n, f, r, ia[w]] + B[n, f, ib[r], w] for the program's row r = i_r and columns o_w, in ACC: [FP, BLOCK_W].
    b_ia: the columns' clamped col_index ([BLOCK_W]); b_ib: the row's clamped row_index, as a [BLOCK_W] vector
    (masks combined from scalars misbehave in the interpreter)."""
    o_nf = (i_n * F + o_f).to(tl.int64)  # [FP]
    m = m_f[:, None] & m_w[None, :]
    b_a = tl.load(rows + (o_nf[:, None] * H + i_r) * KA + b_ia[None, :], mask=m, other=0.0)  # [FP, BLOCK_W]
    b_b = tl.load(cols + (o_nf[:, None] * KB + b_ib[None, :]) * W + o_w[None, :], mask=m, other=0.0)
    return b_a.to(ACC) + b_b.to(ACC)


@triton.jit
def blur_aware_mask_fwd_kernel(
    x, rows, cols, col_index, row_index, weight, bias, out,
    # x, out [N, C, H, W]; rows [N, F, H, KA]; cols [N, F, KB, W]; col_index [W], row_index [H] (int32);
    # weight [C, F]; bias [C]
    C, F, H, W, KA, KB,
    HAS_BIAS: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    FP: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0)
    n_wb = tl.cdiv(W, BLOCK_W)
    i_wb, i_r, i_n = pid % n_wb, (pid // n_wb) % H, pid // (n_wb * H)
    o_w = i_wb * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    m_w = o_w < W
    o_f = tl.arange(0, FP)  # [FP]
    m_f = o_f < F
    b_ia = _clamped_index(col_index, o_w, m_w, KA)  # [BLOCK_W]
    b_ib = _clamped_index(row_index, i_r + 0 * o_w, m_w, KB)  # [BLOCK_W]
    b_pre = _mask_preactivation(rows, cols, b_ia, b_ib, i_n, i_r, o_f, m_f, o_w, m_w, F, H, W, KA, KB, ACC)
    b_z = tl.maximum(b_pre, 0.0).to(DOT)  # [FP, BLOCK_W] relu(fuse conv)

    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        m_c = o_c < C
        b_wt = tl.load(weight + o_c[:, None] * F + o_f[None, :], mask=m_c[:, None] & m_f[None, :], other=0.0)
        b_u = tl.dot(b_wt.to(DOT), b_z, input_precision="ieee").to(ACC)  # [BLOCK_C, BLOCK_W]
        if HAS_BIAS:
            b_u += tl.load(bias + o_c, mask=m_c, other=0.0).to(ACC)[:, None]
        o_x = ((i_n * C + o_c).to(tl.int64) * H + i_r)[:, None] * W + o_w[None, :]  # [BLOCK_C, BLOCK_W]
        m_x = m_c[:, None] & m_w[None, :]
        b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(ACC)
        tl.store(out + o_x, (b_x * _sigmoid(b_u)).to(out.dtype.element_ty), mask=m_x)


@triton.jit
def blur_aware_mask_bwd_kernel(
    go, x, rows, cols, col_index, row_index, weight, bias, row_order, tile_entries,
    grad_x, part_rows, part_cols, part_w, part_b,
    # go, x, grad_x [N, C, H, W]; row_order [H] (int32): the rows sorted by their clamped row_index, stably;
    # tile_entries [n_wb, 2] (int32): the least and the greatest clamped col_index of each column tile.
    # Partials (ACC): part_rows [N, n_wb, H, KA, F] (written for the tile's entries only);
    # part_cols [N, n_slots, F, W]; part_w [programs, C, F]; part_b [programs, C, BLOCK_W]
    C, F, H, W, KA, KB, n_chunks, chunk_rows, n_slots,
    HAS_BIAS: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr,
    NEED_T: tl.constexpr, DOT: tl.constexpr, ACC: tl.constexpr,
    FP: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """A program owns a column tile of one image and a chunk of chunk_rows rows in row_order. Per row it
    recomputes the mask of its pixels, writes grad_x = go * M and forms grad_u = go * x * M (1 - M) and
    grad_z = relu'(.) * Wt^T grad_u in registers, then reduces them where they are:
    - weight and bias: grad_u z^T and sum(grad_u) added into the program's own partials (L2-resident);
    - row_table: grad_z summed over the tile's columns per col_index entry the tile reads (one or two of a
      monotone map), one partial per column tile, which blur_aware_mask_rows_finish sums;
    - col_table: grad_z summed over the rows while their row_index stays the same (rows sorted by it),
      written at slot chunk + row_index when it changes: along the sorted order (chunk, row_index) only
      grows, so the slot of a run is its own, and blur_aware_mask_cols_finish sums each entry's runs.
    No grad_u, z or grad_z goes through memory, and every partial element is written by one program."""
    pid = tl.program_id(0)
    n_wb = tl.cdiv(W, BLOCK_W)
    i_chunk, i_wb, i_n = pid % n_chunks, (pid // n_chunks) % n_wb, pid // (n_chunks * n_wb)
    o_w = i_wb * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    m_w = o_w < W
    o_f = tl.arange(0, FP)  # [FP]
    m_f = o_f < F
    b_ia = _clamped_index(col_index, o_w, m_w, KA)  # [BLOCK_W]
    b_cols = tl.zeros([FP, BLOCK_W], dtype=ACC)  # col_table's gradient over the current run of rows
    q0 = i_chunk * chunk_rows
    q1 = tl.minimum(q0 + chunk_rows, H)
    p_pw = part_w + pid.to(tl.int64) * C * F
    p_pb = part_b + pid.to(tl.int64) * C * BLOCK_W
    for q in range(q0, q1):
        # the row as a [BLOCK_W] vector: masks combined from scalars misbehave in the interpreter
        i_row = tl.load(row_order + q)
        i_r = i_row + 0 * o_w  # [BLOCK_W]
        # the index maps are loaded per row (L1 hits): kept across the loop, they cost more than they save
        b_pre = _mask_preactivation(rows, cols, _clamped_index(col_index, o_w, m_w, KA),
                                    _clamped_index(row_index, i_r, m_w, KB), i_n, i_r, o_f, m_f, o_w, m_w,
                                    F, H, W, KA, KB, ACC)
        b_z = tl.maximum(b_pre, 0.0).to(DOT)
        b_gz = tl.zeros([FP, BLOCK_W], dtype=ACC)
        for c0 in range(0, C, BLOCK_C):
            o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
            m_c = o_c < C
            b_wt = tl.load(weight + o_c[:, None] * F + o_f[None, :], mask=m_c[:, None] & m_f[None, :], other=0.0)
            b_wt = b_wt.to(DOT)  # [BLOCK_C, FP]
            b_u = tl.dot(b_wt, b_z, input_precision="ieee").to(ACC)  # [BLOCK_C, BLOCK_W]
            if HAS_BIAS:
                b_u += tl.load(bias + o_c, mask=m_c, other=0.0).to(ACC)[:, None]
            b_m = _sigmoid(b_u)
            o_x = ((i_n * C + o_c).to(tl.int64) * H)[:, None] * W + (i_r * W + o_w)[None, :]  # [BLOCK_C, BLOCK_W]
            m_x = m_c[:, None] & m_w[None, :]
            b_go = tl.load(go + o_x, mask=m_x, other=0.0).to(ACC)
            if NEED_X:
                tl.store(grad_x + o_x, (b_go * b_m).to(grad_x.dtype.element_ty), mask=m_x)
            if NEED_W or NEED_B or NEED_T:
                b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(ACC)
                # in the input's dtype, as autograd's product with z would take it
                b_gu = (b_go * b_x * b_m * (1.0 - b_m)).to(x.dtype.element_ty).to(DOT)  # [BLOCK_C, BLOCK_W]
                if NEED_T:
                    b_gz += tl.dot(tl.trans(b_wt), b_gu, input_precision="ieee").to(ACC)  # [FP, BLOCK_W]
                # the first row of the chunk starts the program's partials, the others add to them
                if NEED_W:
                    p_dw = p_pw + o_c[:, None] * F + o_f[None, :]
                    m_dw = m_c[:, None] & m_f[None, :]
                    b_dw = tl.dot(b_gu, tl.trans(b_z), input_precision="ieee").to(ACC)  # [BLOCK_C, FP]
                    if q > q0:
                        b_dw += tl.load(p_dw, mask=m_dw, other=0.0)
                    tl.store(p_dw, b_dw, mask=m_dw)
                if NEED_B:
                    # summed over the rows per column here and over the columns after the kernel: a sum
                    # across lanes and warps each row (shuffles, shared memory, barriers) issued 15% of the
                    # kernel's instructions at F = 64
                    p_db = p_pb + o_c[:, None] * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]  # [BLOCK_C, BLOCK_W]
                    b_db = b_gu.to(ACC)
                    if q > q0:
                        b_db += tl.load(p_db, mask=m_c[:, None], other=0.0)
                    tl.store(p_db, b_db, mask=m_c[:, None])
        if NEED_T:
            b_gz = tl.where(b_pre > 0, b_gz, 0.0)
            # per entry a masked sum, not a product with the 0/1 membership: a NaN reaches only its own entry
            p_pr = part_rows + (((i_n * n_wb + i_wb) * H + i_row) * KA).to(tl.int64) * F + o_f  # [FP]
            for ka in range(tl.load(tile_entries + 2 * i_wb), tl.load(tile_entries + 2 * i_wb + 1) + 1):
                tl.store(p_pr + ka * F, tl.sum(tl.where((b_ia == ka)[None, :], b_gz, 0.0), axis=1), mask=m_f)
            b_cols += b_gz
            # the run ends where the next row in the order reads another col_table row, or with the chunk
            # (the row's own loaded again: kept from above across the channel loop, it spilled float32 at
            # F = 192 on sm_90)
            b_kb = _clamped_index(row_index, i_r, m_w, KB)
            b_kb_next = _clamped_index(row_index, tl.load(row_order + tl.minimum(q + 1, q1 - 1) + 0 * o_w), m_w, KB)
            b_end = (b_kb_next != b_kb) | (q + 1 + 0 * o_w == q1)  # [BLOCK_W]
            o_slot = (i_n * n_slots + i_chunk + b_kb).to(tl.int64) * F  # [BLOCK_W]
            p_pc = part_cols + (o_slot[None, :] + o_f[:, None]) * W + o_w[None, :]  # [FP, BLOCK_W]
            tl.store(p_pc, b_cols, mask=m_f[:, None] & (m_w & b_end)[None, :])
            b_cols = tl.where(b_end[None, :], 0.0, b_cols)


@triton.jit
def blur_aware_mask_cols_finish_kernel(
    part_cols, grad_cols, starts, counts,
    # part_cols [N, n_slots, F, W] (ACC); grad_cols [N, F, KB, W]; starts, counts [KB] (int32): where each
    # col_table row's rows begin in the sorted order and how many there are
    F, W, KB, chunk_rows, n_slots,
    ACC: tl.constexpr, FP: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """grad_cols[n, :, kb] = the sum of the runs of row_index kb, one per chunk its rows fall in (fixed order)."""
    pid = tl.program_id(0)
    n_wb = tl.cdiv(W, BLOCK_W)
    i_wb, i_kb, i_n = pid % n_wb, (pid // n_wb) % KB, pid // (n_wb * KB)
    o_w = i_wb * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    o_f = tl.arange(0, FP)  # [FP]
    m = (o_f < F)[:, None] & (o_w < W)[None, :]
    start, count = tl.load(starts + i_kb), tl.load(counts + i_kb)
    b_g = tl.zeros([FP, BLOCK_W], dtype=ACC)
    j_end = tl.where(count > 0, (start + tl.maximum(count, 1) - 1) // chunk_rows + 1, 0)  # past the last chunk
    for j in range(start // chunk_rows, j_end):
        o_s = (i_n * n_slots + j + i_kb).to(tl.int64) * F
        b_g += tl.load(part_cols + (o_s + o_f)[:, None] * W + o_w[None, :], mask=m, other=0.0)
    o_g = ((i_n * F + o_f).to(tl.int64) * KB + i_kb) * W
    tl.store(grad_cols + o_g[:, None] + o_w[None, :], b_g.to(grad_cols.dtype.element_ty), mask=m)


@triton.jit
def blur_aware_mask_rows_finish_kernel(
    part_rows, grad_rows, tile_entries,
    # part_rows [N, n_wb, H, KA, F] (ACC); grad_rows [N, F, H, KA]; tile_entries [n_wb, 2] (int32)
    F, H, KA, n_wb,
    ACC: tl.constexpr, FP: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """grad_rows[n, :, r, ka] = the sum of the partials of the column tiles that read entry ka (fixed order)."""
    pid = tl.program_id(0)
    n_rb = tl.cdiv(H, BLOCK_R)
    i_rb, i_ka, i_n = pid % n_rb, (pid // n_rb) % KA, pid // (n_rb * KA)
    o_r = i_rb * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    o_f = tl.arange(0, FP)  # [FP]
    m = (o_r < H)[:, None] & (o_f < F)[None, :]
    b_g = tl.zeros([BLOCK_R, FP], dtype=ACC)
    for i_wb in range(0, n_wb):
        if (tl.load(tile_entries + 2 * i_wb) <= i_ka) & (i_ka <= tl.load(tile_entries + 2 * i_wb + 1)):
            o_p = (((i_n * n_wb + i_wb) * H + o_r) * KA + i_ka).to(tl.int64) * F  # [BLOCK_R]
            b_g += tl.load(part_rows + o_p[:, None] + o_f[None, :], mask=m, other=0.0)
    o_g = ((i_n * F + o_f).to(tl.int64) * H)[None, :] + o_r[:, None]  # [BLOCK_R, FP]
    tl.store(grad_rows + o_g * KA + i_ka, b_g.to(grad_rows.dtype.element_ty), mask=m)


# -- launchers ---------------------------------------------------------------------------------------------


def _pad(k: int) -> int:
    """A bin axis as a tile axis: a power of two, at least 16 (the smallest tl.dot)."""
    return max(16, triton.next_power_of_2(k))


def _block(length: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(length)))


@functools.lru_cache(maxsize=None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _target_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the interpreter runs programs one by one: fewer is faster
    return _PROGRAMS_PER_SM * _num_sms(device.index if device.index is not None else torch.cuda.current_device())


def tile_ranges(n_tiles: int, parallel: int, target: int) -> tuple[int, int]:
    """(ranges, tiles per range) of n_tiles tiles walked by `parallel` programs each: about `target`
    programs in all, each range as long as that allows."""
    ranges = min(n_tiles, max(1, triton.cdiv(target, parallel)))
    tiles_per_range = triton.cdiv(n_tiles, ranges)
    return triton.cdiv(n_tiles, tiles_per_range), tiles_per_range


def mask_chunks(N: int, H: int, n_wb: int, target: int) -> tuple[int, int]:
    """(chunks, rows per chunk) of blur_aware_mask's backward: about `target` programs of a column tile and
    a chunk of rows."""
    chunk_rows = triton.cdiv(H, max(1, min(H, target // max(1, N * n_wb))))
    return triton.cdiv(H, chunk_rows), chunk_rows


def _sizes_args(sizes) -> list:
    sizes = list(sizes)
    return sizes + [0] * (STRIP_POOL_MAX_SIZES - len(sizes))


def _reduce_tiles(W: int, dtype: torch.dtype) -> tuple[int, int]:
    """(BLOCK_W, num_warps) of strip_reduce's [32, BLOCK_W] tiles, none with a stack frame on sm_90.
    float32/float64 bin products run on FMAs: [32, 128] tiles spilled 104-1072 B a thread, [32, 64] on 8
    warps fit. The half types run on tensor cores, [32, 64] on 4 warps: compiled as a 720p launch
    specializes it (W a multiple of 16: 128-bit loads), [32, 128] took 250-255 registers, spilled 16 B in
    bfloat16, and its loop issued 1663 instructions for 8 memory instructions (926 for 5 at 64 columns)."""
    if dtype in (torch.float16, torch.bfloat16):
        return _block(W, _MAX_BLOCK_W // 2), 4
    return _block(W, _MAX_BLOCK_W // 2), 8


def reduce(x, v_out, h_out, KV, KH, sizes=None, idx_w=None, idx_h=None):
    """strip_reduce of x [P, H, W] (contiguous) into v_out (plane stride v_out.stride(0),
    rows of KV) and h_out (plane stride h_out.stride(0), KH rows of W): adaptive
    means of `sizes`, or sums over the index maps idx_w [W] / idx_h [H] (int32)."""
    P, H, W = x.shape
    if P == 0:
        return
    mode = MODE_ADAPTIVE if sizes is not None else MODE_INDEX
    KVP, KHP = _pad(KV), _pad(KH)
    BLOCK_W, warps = _reduce_tiles(W, x.dtype)
    BLOCK_H = _block(H, _MAX_BLOCK_H)
    n_tiles = triton.cdiv(W, BLOCK_W)
    # Enough programs for the GPU, each range of tiles as long as possible (fewer partials).
    ranges, tiles_per_range = tile_ranges(n_tiles, P, _target_programs(x.device))
    acc = acc_dtype(x.dtype)
    ws = torch.empty((P, ranges, H, KVP), dtype=acc, device=x.device)
    dummy = torch.empty(0, dtype=torch.int32, device=x.device)
    with on_device(x):
        strip_reduce_kernel[(P * ranges,)](
            x, ws, h_out, dummy if idx_w is None else idx_w, dummy if idx_h is None else idx_h,
            H, W, KV, KH, n_tiles, tiles_per_range, ranges, h_out.stride(0), *_sizes_args(sizes or ()),
            MODE=mode, DOT=tl_dot(x.dtype), ACC=tl_acc(x.dtype), KVP=KVP, KHP=KHP, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
            NONFINITE=True, num_warps=warps,
        )
        FINISH_H = _block(H, 64)
        strip_reduce_finish_kernel[(P * triton.cdiv(H, FINISH_H),)](
            ws, v_out, H, KV, ranges, v_out.stride(0), ACC=tl_acc(x.dtype), KVP=KVP, BLOCK_H=FINISH_H, num_warps=4,
        )


def spread(v, h, out, KV, KH, sizes=None, idx_w=None, idx_h=None):
    """strip_spread into out [P, H, W] (contiguous) from v (plane stride v.stride(0), rows of KV)
    and h (plane stride h.stride(0), KH rows of W): the adjoint of reduce."""
    P, H, W = out.shape
    if P == 0:
        return
    mode = MODE_ADAPTIVE if sizes is not None else MODE_INDEX
    BLOCK_W = _block(W, _MAX_BLOCK_W)
    BLOCK_H = _block(H, _MAX_BLOCK_H)
    n_wb, n_tiles = triton.cdiv(W, BLOCK_W), triton.cdiv(H, BLOCK_H)
    ranges, tiles_per_range = tile_ranges(n_tiles, P * n_wb, _target_programs(out.device))
    dummy = torch.empty(0, dtype=torch.int32, device=out.device)
    with on_device(out):
        strip_spread_kernel[(P * ranges * n_wb,)](
            v, h, out, dummy if idx_w is None else idx_w, dummy if idx_h is None else idx_h,
            H, W, KV, KH, v.stride(0), h.stride(0), tiles_per_range, ranges, *_sizes_args(sizes or ()),
            MODE=mode, DOT=tl_dot(out.dtype), ACC=tl_acc(out.dtype), KVP=_pad(KV), KHP=_pad(KH), BLOCK_H=BLOCK_H,
            BLOCK_W=BLOCK_W, NONFINITE=True, num_warps=_SPREAD_WARPS,
        )


# strip_pool: the pooled maps of all sizes live in one buffer [N, C, H*K + K*W] per plane:
# the v maps [H, K] (sizes concatenated along the bins) followed by the h maps [K, W].


def pool_forward(x, sizes):
    x = x.contiguous()
    N, C, H, W = x.shape
    K = sum(sizes)
    buf = torch.empty((N, C, H * K + K * W), dtype=x.dtype, device=x.device)
    flat = buf.view(N * C, H * K + K * W)
    reduce(x.view(N * C, H, W), flat, flat[:, H * K:], K, K, sizes=sizes)
    return buf


def pool_backward(grad_buf, x, sizes, output_mask):
    if not output_mask[0]:
        return x.new_empty(0)
    grad_buf = grad_buf.contiguous()
    N, C, H, W = x.shape
    K = sum(sizes)
    grad_x = torch.empty((N, C, H, W), dtype=x.dtype, device=x.device)
    flat = grad_buf.view(N * C, H * K + K * W)
    spread(flat, flat[:, H * K:], grad_x.view(N * C, H, W), K, K, sizes=sizes)
    return grad_x


@device_constant_cache(maxsize=256)
def nearest_index(out_size: int, in_size: int, device: torch.device) -> torch.Tensor:
    """floor(i * in_size / out_size) for i < out_size, exact (int32, on `device`; cached)."""
    i = torch.arange(out_size, dtype=torch.int64, device=device)
    return torch.div(i * in_size, out_size, rounding_mode="floor").to(torch.int32)


def expand_forward(v, h, size):
    H, W = size
    v, h = v.contiguous(), h.contiguous()
    N, C, _, nv = v.shape
    nh = h.shape[2]
    out = torch.empty((N, C, H, W), dtype=v.dtype, device=v.device)
    spread(v.view(N * C, H * nv), h.view(N * C, nh * W), out.view(N * C, H, W), nv, nh,
           idx_w=nearest_index(W, nv, v.device), idx_h=nearest_index(H, nh, v.device))
    return out


def expand_backward(grad_out, v, h, size, output_mask):
    """(grad_v, grad_h) from one pass over grad_out; an unneeded one is an empty placeholder."""
    nv, nh = v.shape[3], h.shape[2]
    grad_out = grad_out.contiguous()
    N, C, H, W = grad_out.shape
    grad_v = torch.empty((N, C, H, nv), dtype=grad_out.dtype, device=grad_out.device)
    grad_h = torch.empty((N, C, nh, W), dtype=grad_out.dtype, device=grad_out.device)
    reduce(grad_out.view(N * C, H, W), grad_v.view(N * C, H * nv), grad_h.view(N * C, nh * W), nv, nh,
           idx_w=nearest_index(W, nv, grad_out.device), idx_h=nearest_index(H, nh, grad_out.device))
    return grad_v if output_mask[0] else v.new_empty(0), grad_h if output_mask[1] else h.new_empty(0)


# blur_aware_mask


def _mask_config(F: int, C: int, dtype: torch.dtype) -> dict:
    """[FP, BLOCK_W] pre-activation and [BLOCK_C, FP] weight tiles of at most 8192 elements,
    4096 in float64: its tiles at 8192 need up to 224 KB of shared memory, over sm_80's
    163 KB per block (the compile test holds every configuration to the limits)."""
    FP = _pad(F)
    budget = 4096 if dtype == torch.float64 else 8192
    BLOCK_W = 64 if FP <= budget // 128 else 32
    # half the budget for the weight tile and 8 warps: 4 warps at F = 64 and [32, 256] weight tiles at
    # F = 192 spilled 8-48 B a thread on sm_90 in float32
    BLOCK_C = max(16, min(64, triton.next_power_of_2(max(C, 1)), budget // (2 * FP)))
    return {"FP": FP, "BLOCK_C": BLOCK_C, "BLOCK_W": BLOCK_W, "num_warps": 8}


def _mask_bwd_config(F: int, dtype: torch.dtype) -> dict:
    """The backward keeps three [FP, BLOCK_W] tiles across its channel loop (the pre-activation, grad_z's
    accumulator and col_table's run) and runs three products, on 8 warps. The half types (tensor-core
    products): [FP, BLOCK_W] of 4096 elements, 32 channels a step (static sm_90 estimate at the sweep:
    0.209 ms; 0.254 at 16 and 64 spilled 40 B, both with the bias gradient summed across lanes each row).
    float32 and float64 (FMA products): 2048 elements and 16 channels (float32 spilled 152-216 B a thread at
    4096 and F = 64, 40-112 B at 32 channels). float64 at F = 192 keeps 1.7 KB on the stack even at 16 columns
    (16 warps: 4.8 KB); no hot path."""
    FP = _pad(F)
    half = dtype in (torch.float16, torch.bfloat16)
    budget = 4096 if half else 2048
    return {"FP": FP, "BLOCK_C": 32 if half else 16, "BLOCK_W": max(16, min(64, budget // FP)), "num_warps": 8}


def _mask_finish_config(F: int) -> dict:
    """blur_aware_mask_cols_finish's [FP, BLOCK_W] tiles (rows_finish: [BLOCK_W, FP]): 4096 elements on 4 warps."""
    FP = _pad(F)
    return {"FP": FP, "BLOCK_W": max(16, min(64, 4096 // FP)), "num_warps": 4}


def _mask_args(x, rows, cols, col_index, row_index, weight, bias):
    x, rows, cols = x.contiguous(), rows.contiguous(), cols.contiguous()
    col_index, row_index = col_index.to(torch.int32).contiguous(), row_index.to(torch.int32).contiguous()
    weight = weight.reshape(weight.shape[0], weight.shape[1]).contiguous()
    bias = bias.contiguous() if bias is not None else x.new_empty(0)
    return x, rows, cols, col_index, row_index, weight, bias


def mask_forward(x, rows, col_index, cols, row_index, weight, bias):
    has_bias = bias is not None
    x, rows, cols, col_index, row_index, weight, bias = _mask_args(x, rows, cols, col_index, row_index, weight, bias)
    N, C, H, W = x.shape
    F, KA, KB = rows.shape[1], rows.shape[3], cols.shape[2]
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    cfg = _mask_config(F, C, x.dtype)
    grid = (N * H * triton.cdiv(W, cfg["BLOCK_W"]),)
    with on_device(x):
        blur_aware_mask_fwd_kernel[grid](
            x, rows, cols, col_index, row_index, weight, bias, out, C, F, H, W, KA, KB,
            HAS_BIAS=has_bias, DOT=tl_dot(x.dtype), ACC=tl_acc(x.dtype), **cfg,
        )
    return out


def mask_backward(grad_out, x, rows, col_index, cols, row_index, weight, bias, output_mask):
    """Gradients of every tensor argument (the index maps take none); unneeded ones are empty placeholders."""
    need_x, need_rows, need_cols, need_w, need_b = (output_mask[i] for i in (0, 1, 3, 5, 6))
    has_bias = bias is not None
    need_b = need_b and has_bias
    need_t = need_rows or need_cols
    w_shape = weight.shape
    grad_out = grad_out.contiguous()
    x, rows, cols, col_index, row_index, weight, bias = _mask_args(x, rows, cols, col_index, row_index, weight, bias)
    N, C, H, W = x.shape
    F, KA, KB = rows.shape[1], rows.shape[3], cols.shape[2]
    acc = acc_dtype(x.dtype)
    cfg = _mask_bwd_config(F, x.dtype)
    n_wb = triton.cdiv(W, cfg["BLOCK_W"])
    # chunks of rows sized for enough programs on the GPU (one chunk a column tile in the interpreter)
    n_chunks, chunk_rows = mask_chunks(N, H, n_wb, _target_programs(x.device))
    n_slots = n_chunks + KB - 1
    programs = N * n_wb * n_chunks
    # the rows sorted by the col_table row they read (clamped as the kernel clamps), ties in row order
    kb_sorted, row_order = torch.sort(row_index.clamp(0, KB - 1), stable=True)
    row_order = row_order.to(torch.int32)
    # each column tile's least and greatest col_index entry (clamped as the kernel clamps)
    ia = col_index.clamp(0, KA - 1)
    past_w = n_wb * cfg["BLOCK_W"] - W
    lo = torch.cat([ia, ia.new_full((past_w,), KA)]).view(n_wb, -1).amin(1)
    hi = torch.cat([ia, ia.new_full((past_w,), -1)]).view(n_wb, -1).amax(1)
    tile_entries = torch.stack([lo, hi], 1).to(torch.int32)

    def empty(dtype=x.dtype):  # a placeholder; the op's outputs must not alias each other
        return x.new_empty(0, dtype=dtype)

    grad_x = torch.empty_like(x) if need_x else empty()
    part_rows = torch.empty((N, n_wb, H, KA, F), dtype=acc, device=x.device) if need_t else empty(acc)
    part_cols = torch.empty((N, n_slots, F, W), dtype=acc, device=x.device) if need_t else empty(acc)
    part_w = torch.empty((programs, C, F), dtype=acc, device=x.device) if need_w else empty(acc)
    part_b = torch.empty((programs, C, cfg["BLOCK_W"]), dtype=acc, device=x.device) if need_b else empty(acc)
    if programs > 0:
        with on_device(x):
            blur_aware_mask_bwd_kernel[(programs,)](
                grad_out, x, rows, cols, col_index, row_index, weight, bias, row_order, tile_entries,
                grad_x, part_rows, part_cols, part_w, part_b,
                C, F, H, W, KA, KB, n_chunks, chunk_rows, n_slots, HAS_BIAS=has_bias, NEED_X=need_x,
                NEED_W=need_w, NEED_B=need_b, NEED_T=need_t, DOT=tl_dot(x.dtype), ACC=tl_acc(x.dtype),
                **cfg,
            )

    grad_rows, grad_cols = empty(), empty()
    if need_rows:
        grad_rows = torch.empty_like(rows)
        fin = _mask_finish_config(F)
        BLOCK_R = _block(H, fin.pop("BLOCK_W"))
        if N > 0:
            with on_device(x):
                blur_aware_mask_rows_finish_kernel[(N * KA * triton.cdiv(H, BLOCK_R),)](
                    part_rows, grad_rows, tile_entries, F, H, KA, n_wb, ACC=tl_acc(x.dtype), BLOCK_R=BLOCK_R, **fin,
                )
    if need_cols:
        grad_cols = torch.empty_like(cols)
        entries = torch.arange(KB, dtype=kb_sorted.dtype, device=x.device)
        starts = torch.searchsorted(kb_sorted, entries).to(torch.int32)
        counts = torch.searchsorted(kb_sorted, entries, right=True).to(torch.int32) - starts
        fin = _mask_finish_config(F)
        fin["BLOCK_W"] = _block(W, fin["BLOCK_W"])
        if N > 0:
            with on_device(x):
                blur_aware_mask_cols_finish_kernel[(N * KB * triton.cdiv(W, fin["BLOCK_W"]),)](
                    part_cols, grad_cols, starts, counts, F, W, KB, chunk_rows, n_slots, ACC=tl_acc(x.dtype), **fin,
                )
    grad_w = part_w.sum(0).to(weight.dtype).reshape(w_shape) if need_w else empty()
    grad_b = part_b.sum((0, 2)).to(bias.dtype) if need_b else empty()
    return grad_x, grad_rows, col_index.new_empty(0), grad_cols, row_index.new_empty(0), grad_w, grad_b
