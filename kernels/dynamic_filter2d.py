"""Triton kernels of dynamic_filter2d (ops.md §2): forward and backward.

A program owns BLOCK_W pixels of one image row of one (n, group). The forward
loops over the group's channels inside the program and over the exact k*k taps
(no padding to a power of two): the taps of a pixel are read from memory once
and their softmax computed once per channel block. NCHW rows of whole 8-pixel
chunks go by rows of taps (dynamic_filter2d_fwd_rows_kernel): each chunk is one
aligned vector load per row of taps, moved in registers for each tap's column
offset; the other layouts and shapes gather each tap's samples. The backward kernels hold
the taps as one [K2P, BLOCK_W] tile (K2P = k*k rounded up to a power of two;
the softmax runs over its first axis in registers) and the samples they weight
as one [K2P, BLOCK_C, BLOCK_W] gather. Accumulation is float32 (float64 for
float64). No atomics: every output element is written by exactly one program.
"""

import torch
import triton
import triton.language as tl

from ._triton_common import on_device, tl_acc
from .layout import is_channels_last
from .padding import PAD_MODES, num_preimages, pad_preimage, pad_source


@triton.jit
def _softmax_taps(b_k, m_t):
    # b_k [K2P, BLOCK_W]; m_t [K2P] marks real taps
    b_k = tl.where(m_t[:, None], b_k, float("-inf"))
    b_k = tl.exp(b_k - tl.max(b_k, axis=0)[None, :])
    return b_k / tl.sum(b_k, axis=0)[None, :]


@triton.jit
def _program(W, H, BLOCK_W: tl.constexpr):
    """(column block, row, rest) of this program; one grid axis avoids the 65535 limit of axes 1 and 2."""
    pid = tl.program_id(0)
    n_wb = tl.cdiv(W, BLOCK_W)
    return pid % n_wb, (pid // n_wb) % H, pid // (n_wb * H)


@triton.jit
def _sample_offsets(i_h, o_w, m_w, H, W, KS: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                    MODE: tl.constexpr, K2P: tl.constexpr):
    """Plane offsets [K2P, BLOCK_W] of the sample each tap reads for row i_h, columns o_w, and their mask."""
    o_t = tl.arange(0, K2P)
    m_t = o_t < KS * KS
    r, m_r = pad_source(i_h + (o_t // KS) * DIL - PAD, H, MODE)  # [K2P]
    c, m_c = pad_source(o_w[None, :] + (o_t % KS)[:, None] * DIL - PAD, W, MODE)  # [K2P, BLOCK_W]
    return r[:, None] * W + c, (m_t & m_r)[:, None] & m_c & m_w[None, :]


@triton.jit
def _taps_max(p_k, s_kc, m_w, KS: tl.constexpr, SOFTMAX: tl.constexpr, ACC: tl.constexpr, UNROLL: tl.constexpr):
    """Where SOFTMAX, the max over the KS*KS taps at p_k (any shape; taps s_kc apart), so that no exponential
    overflows (else -inf, unused)."""
    b_max = tl.full(m_w.shape, float("-inf"), ACC)
    if SOFTMAX:
        for u in tl.range(KS * KS, loop_unroll_factor=UNROLL):
            b_max = tl.maximum(b_max, tl.load(p_k + u * s_kc, mask=m_w, other=0.0).to(ACC))
    return b_max


@triton.jit
def _grid2(a_c, a_w, CL: tl.constexpr):
    """The [BLOCK_C, BLOCK_W] tile a_c + a_w of a channel vector and a pixel vector, or for
    channels_last its transpose [BLOCK_W, BLOCK_C]: warp lanes go along the tile's last axis,
    the contiguous one in memory for that layout."""
    if CL:
        return a_w[:, None] + a_c[None, :]
    else:
        return a_c[:, None] + a_w[None, :]


@triton.jit
def _mask2(m_c, m_w, CL: tl.constexpr):
    """The mask of a _grid2 tile from a channel mask and a pixel mask."""
    if CL:
        return m_w[:, None] & m_c[None, :]
    else:
        return m_c[:, None] & m_w[None, :]


@triton.jit
def _per_pixel(a_w, CL: tl.constexpr):
    """A pixel vector broadcast against a _grid2 tile."""
    if CL:
        return a_w[:, None]
    else:
        return a_w[None, :]


@triton.jit
def dynamic_filter2d_fwd_kernel(
    x, k, out,  # x, out [N, C, H, W]; k [N, G*KS*KS, H, W]; all strided
    C, H, W, G, Cg,
    s_xn, s_xc, s_xh, s_xw, s_kn, s_kc, s_kh, s_kw, s_on, s_oc, s_oh, s_ow,
    KS: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, MODE: tl.constexpr, SOFTMAX: tl.constexpr,
    CL: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, TAP_UNROLL: tl.constexpr,
):
    """A program owns BLOCK_W pixels of one row of one (n, group) and loops over the group's
    channels in blocks of BLOCK_C inside: the KS*KS taps of its pixels are read once from memory
    (again from L1 for each further channel block) and each exponential computed once per channel
    block; one [channels, pixels] gather per tap, no padded taps."""
    i_w, i_h, i_ng = _program(W, H, BLOCK_W)
    i_n, i_g = i_ng // G, i_ng % G

    o_w = i_w * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    m_w = o_w < W
    p_k = k + i_n.to(tl.int64) * s_kn + (i_g * KS * KS).to(tl.int64) * s_kc + i_h * s_kh + o_w * s_kw  # [BLOCK_W]
    b_max = _taps_max(p_k, s_kc, m_w, KS, SOFTMAX, ACC, TAP_UNROLL)  # [BLOCK_W]
    p_x = x + i_n.to(tl.int64) * s_xn
    for c0 in range(0, Cg, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C] channel within the group
        m_c = o_c < Cg
        o_plane = (i_g * Cg + o_c).to(tl.int64) * s_xc  # [BLOCK_C]
        b_o = _grid2(tl.zeros([BLOCK_C], ACC), tl.zeros([BLOCK_W], ACC), CL)
        b_den = tl.zeros([BLOCK_W], dtype=ACC)
        for t in tl.range(KS * KS, loop_unroll_factor=TAP_UNROLL):
            # the row as a [BLOCK_W] vector: masks combined from scalars misbehave in the interpreter
            r, m_r = pad_source(i_h + (t // KS) * DIL - PAD + 0 * o_w, H, MODE)
            c, m_cc = pad_source(o_w + (t % KS) * DIL - PAD, W, MODE)
            m_s = m_r & m_cc & m_w  # [BLOCK_W]
            b_t = tl.load(p_k + t * s_kc, mask=m_w, other=0.0).to(ACC)
            if SOFTMAX:
                b_t = tl.where(m_w, tl.exp(b_t - b_max), 0.0)
                b_den += b_t
            # a tap that reads the zero padding contributes nothing: its weight is not used (NaN * 0 is NaN)
            b_t = tl.where(m_s, b_t, 0.0)
            o_s = r.to(tl.int64) * s_xh + c * s_xw  # [BLOCK_W]
            b_x = tl.load(p_x + _grid2(o_plane, o_s, CL), mask=_mask2(m_c, m_s, CL), other=0.0).to(ACC)
            b_o += b_x * _per_pixel(b_t, CL)
        if SOFTMAX:
            b_o = b_o / _per_pixel(tl.where(m_w, b_den, 1.0), CL)
        o_oc = (i_g * Cg + o_c).to(tl.int64) * s_oc
        p_o = out + i_n.to(tl.int64) * s_on + _grid2(o_oc, i_h * s_oh + o_w * s_ow, CL)
        tl.store(p_o, b_o.to(out.dtype.element_ty), mask=_mask2(m_c, m_w, CL))


CHUNK = tl.constexpr(8)  # pixels of a row a thread of the rows kernel holds: one 16-byte load of float16


@triton.jit
def _shift_left(v, fill):
    """v [..., L] moved one place toward index 0 along its last axis, fill [...] entering at index L - 1 (L a
    power of two): pairs split and joined in registers, no memory, no shuffles."""
    L: tl.constexpr = v.shape[-1]
    if L == 1:
        return tl.expand_dims(fill, len(v.shape) - 1)
    else:
        even, odd = tl.split(tl.reshape(v, v.shape[:-1] + [L // 2, 2]))
        return tl.reshape(tl.join(odd, _shift_left(even, fill)), v.shape)


@triton.jit
def _shift_right(v, fill):
    """v [..., L] moved one place toward index L - 1, fill [...] entering at index 0."""
    L: tl.constexpr = v.shape[-1]
    if L == 1:
        return tl.expand_dims(fill, len(v.shape) - 1)
    else:
        even, odd = tl.split(tl.reshape(v, v.shape[:-1] + [L // 2, 2]))
        return tl.reshape(tl.join(_shift_right(odd, fill), even), v.shape)


@triton.jit
def _chunk_neighbour(p_row, o_col, m_row, W, MODE: tl.constexpr):
    """The samples at columns o_col ([J]: one a chunk, beside it) of the rows p_row ([BLOCK_C, J] pointers to
    column 0), padded as MODE pads: [BLOCK_C, J]."""
    col, ok = pad_source(o_col, W, MODE)
    return tl.load(p_row + col[None, :], mask=m_row & ok[None, :], other=0.0)


@triton.jit
def _rows_tap(b_o, b_den, b_v, p_k, t, s_kc, b_max, o_w, m_w, m_r, W, SHIFT: tl.constexpr, MODE: tl.constexpr,
              SOFTMAX: tl.constexpr, ACC: tl.constexpr):
    """One tap of the rows kernel: b_v [BLOCK_C, J, CHUNK] are its samples (the row's chunks moved by SHIFT
    columns), its weights [J, CHUNK] are read at tap t; returns the updated sums (b_o, b_den)."""
    b_t = tl.load(p_k + t * s_kc, mask=m_w, other=0.0).to(ACC)  # [J, CHUNK]
    if SOFTMAX:
        b_t = tl.where(m_w, tl.exp(b_t - b_max), 0.0)
        b_den += b_t
    # a tap that reads the zero padding contributes nothing: its weight is not used (NaN * 0 is NaN)
    _, m_c = pad_source(o_w + SHIFT, W, MODE)
    b_t = tl.where(m_r[:, None] & m_c & m_w, b_t, 0.0)
    return b_o + b_v.to(ACC) * b_t[None, :, :], b_den


@triton.jit
def dynamic_filter2d_fwd_rows_kernel(
    x, k, out,  # x, out [N, C, H, W]; k [N, G*KS*KS, H, W]; rows contiguous (unit column stride), W % CHUNK == 0
    C, H, W, G, Cg,
    s_xn, s_xc, s_xh, s_kn, s_kc, s_kh, s_on, s_oc, s_oh,
    KS: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, MODE: tl.constexpr, SOFTMAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """The NCHW forward by rows of taps. A program owns BLOCK_W pixels of one row of one (n, group), each thread
    CHUNK consecutive pixels, and loops over the group's channels in blocks of BLOCK_C inside. Per row of taps
    each sample of the row is read once, as part of its chunk (one aligned vector load), with the PAD samples
    on either side of each chunk (padded as MODE pads); a tap's samples are the chunk moved by the tap's column
    offset in registers. dynamic_filter2d_fwd_kernel reads them per tap at an odd column offset instead: one
    16-bit load per sample."""
    i_w, i_h, i_ng = _program(W, H, BLOCK_W)
    i_n, i_g = i_ng // G, i_ng % G
    J: tl.constexpr = BLOCK_W // CHUNK

    o_j = i_w * BLOCK_W + tl.arange(0, J) * CHUNK  # [J] each chunk's first column
    o_w = o_j[:, None] + tl.arange(0, CHUNK)[None, :]  # [J, CHUNK]
    m_j = o_j < W  # whole chunks: W % CHUNK == 0
    m_w = o_w < W
    p_k = k + i_n.to(tl.int64) * s_kn + (i_g * KS * KS).to(tl.int64) * s_kc + i_h * s_kh + o_w  # [J, CHUNK]
    b_max = _taps_max(p_k, s_kc, m_w, KS, SOFTMAX, ACC, None)  # [J, CHUNK]
    p_x = x + i_n.to(tl.int64) * s_xn
    for c0 in range(0, Cg, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C] channel within the group
        m_c = o_c < Cg
        o_plane = (i_g * Cg + o_c).to(tl.int64) * s_xc  # [BLOCK_C]
        b_o = tl.zeros([BLOCK_C, J, CHUNK], dtype=ACC)
        b_den = tl.zeros([J, CHUNK], dtype=ACC)
        for dy in range(KS):
            # the row as a [J] vector: masks combined from scalars misbehave in the interpreter
            r, m_r = pad_source(i_h + dy * DIL - PAD + 0 * o_j, H, MODE)
            p_row = p_x + o_plane[:, None] + (r.to(tl.int64) * s_xh)[None, :]  # [BLOCK_C, J] column 0
            m_row = m_c[:, None] & (m_r & m_j)[None, :]
            b_cur = tl.load(p_row[:, :, None] + o_w[None, :, :], mask=m_row[:, :, None], other=0.0)
            t0 = dy * KS
            b_o, b_den = _rows_tap(b_o, b_den, b_cur, p_k, t0 + PAD // DIL, s_kc, b_max, o_w, m_w, m_r, W, 0,
                                   MODE, SOFTMAX, ACC)
            b_v = b_cur
            for s in tl.static_range(1, PAD + 1):  # left of the centre: samples moved right, s columns
                b_v = _shift_right(b_v, _chunk_neighbour(p_row, o_j - s, m_row, W, MODE))
                if (PAD - s) % DIL == 0:
                    b_o, b_den = _rows_tap(b_o, b_den, b_v, p_k, t0 + (PAD - s) // DIL, s_kc, b_max, o_w, m_w, m_r,
                                           W, -s, MODE, SOFTMAX, ACC)
            b_v = b_cur
            for s in tl.static_range(1, PAD + 1):  # right of it
                b_v = _shift_left(b_v, _chunk_neighbour(p_row, o_j + CHUNK - 1 + s, m_row, W, MODE))
                if (PAD + s) % DIL == 0:
                    b_o, b_den = _rows_tap(b_o, b_den, b_v, p_k, t0 + (PAD + s) // DIL, s_kc, b_max, o_w, m_w, m_r,
                                           W, s, MODE, SOFTMAX, ACC)
        if SOFTMAX:
            b_o = b_o / tl.where(m_w, b_den, 1.0)[None, :, :]
        o_oc = (i_g * Cg + o_c).to(tl.int64) * s_oc
        p_o = out + i_n.to(tl.int64) * s_on + o_oc[:, None, None] + (i_h * s_oh + o_w)[None, :, :]
        tl.store(p_o, b_o.to(out.dtype.element_ty), mask=m_c[:, None, None] & m_w[None, :, :])


@triton.jit
def dynamic_filter2d_bwd_kernel_kernel(
    go, x, k, grad_k, probs,  # go, x [N, C, H, W]; k, grad_k [N, G*KS*KS, H, W]; probs like k, in ACC
    C, H, W, G, Cg,
    KS: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, MODE: tl.constexpr, SOFTMAX: tl.constexpr,
    NEED_GRAD_K: tl.constexpr, STORE_PROBS: tl.constexpr,
    ACC: tl.constexpr, K2P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """grad_k = d softmax(sum over the group's channels of go * sample); also
    stores the normalized taps for the input gradient (STORE_PROBS)."""
    i_w, i_h, i_ng = _program(W, H, BLOCK_W)
    i_n, i_g = i_ng // G, i_ng % G

    o_w = i_w * BLOCK_W + tl.arange(0, BLOCK_W)
    m_w = o_w < W
    o_t = tl.arange(0, K2P)
    m_t = o_t < KS * KS
    o_k = (i_ng * KS * KS + o_t).to(tl.int64)[:, None] * H * W + i_h * W + o_w[None, :]  # [K2P, BLOCK_W]
    m_k = m_t[:, None] & m_w[None, :]
    b_p = tl.load(k + o_k, mask=m_k, other=0.0).to(ACC)
    if SOFTMAX:
        b_p = _softmax_taps(b_p, m_t)
    if STORE_PROBS:
        tl.store(probs + o_k, b_p, mask=m_k)
    if NEED_GRAD_K:
        o_s, m_s = _sample_offsets(i_h, o_w, m_w, H, W, KS, DIL, PAD, MODE, K2P)
        b_gw = tl.zeros([K2P, BLOCK_W], dtype=ACC)
        for c0 in range(0, Cg, BLOCK_C):
            o_c = c0 + tl.arange(0, BLOCK_C)
            m_c = o_c < Cg
            o_plane = (i_n * C + i_g * Cg + o_c).to(tl.int64) * H * W  # [BLOCK_C]
            p_go = go + o_plane[:, None] + i_h * W + o_w[None, :]
            b_go = tl.load(p_go, mask=m_c[:, None] & m_w[None, :], other=0.0).to(ACC)  # [BLOCK_C, BLOCK_W]
            p_x = x + o_plane[None, :, None] + o_s[:, None, :]
            b_x = tl.load(p_x, mask=m_s[:, None, :] & m_c[None, :, None], other=0.0).to(ACC)  # [K2P, BLOCK_C, BLOCK_W]
            b_gw += tl.sum(b_x * b_go[None, :, :], axis=1)
        b_gw = tl.where(m_s, b_gw, 0.0)  # a tap reading the zero padding: no gradient, even from a NaN grad_out
        if SOFTMAX:
            b_gw = b_p * (b_gw - tl.sum(b_p * b_gw, axis=0)[None, :])
        tl.store(grad_k + o_k, b_gw.to(grad_k.dtype.element_ty), mask=m_k)


@triton.jit
def dynamic_filter2d_bwd_input_kernel(
    go, taps, grad_x,  # go, grad_x [N, C, H, W]; taps [N, G*KS*KS, H, W] (normalized)
    C, H, W, G, Cg,
    KS: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, MODE: tl.constexpr, N_PRE: tl.constexpr,
    ACC: tl.constexpr, K2P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """grad_x[y, x] = sum over the padded coordinates (qy, qx) that read (y, x)
    and the taps (i, j) of taps * go at output pixel (qy + PAD - i*DIL, qx + PAD - j*DIL).
    Blocks away from the border have one preimage per axis; the others loop
    over N_PRE candidates per axis."""
    i_w, i_h, i_z = _program(W, H, BLOCK_W)
    n_cb = tl.cdiv(Cg, BLOCK_C)
    i_ng, i_cb = i_z // n_cb, i_z % n_cb
    i_n, i_g = i_ng // G, i_ng % G

    o_w = i_w * BLOCK_W + tl.arange(0, BLOCK_W)  # [BLOCK_W]
    m_w = o_w < W
    o_t = tl.arange(0, K2P)
    m_t = o_t < KS * KS
    t_i, t_j = o_t // KS, o_t % KS
    o_c = i_cb * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < Cg
    o_plane = (i_n * C + i_g * Cg + o_c).to(tl.int64) * H * W  # [BLOCK_C]
    o_taps = (i_ng * KS * KS + o_t).to(tl.int64) * H * W  # [K2P]

    interior = (i_h > PAD) & (i_h < H - 1 - PAD) & (i_w * BLOCK_W > PAD) & (i_w * BLOCK_W + BLOCK_W < W - PAD)
    n_pre = tl.where(interior, 1, N_PRE)
    b_gx = tl.zeros([BLOCK_C, BLOCK_W], dtype=ACC)
    for cy in range(0, n_pre):
        # the row as a [K2P] vector: masks combined from scalars misbehave in the interpreter
        qy, ok_y = pad_preimage(i_h + 0 * t_i, cy, H, PAD, MODE)
        h = qy + PAD - t_i * DIL  # [K2P] output rows that read qy
        m_h = m_t & ok_y & (h >= 0) & (h < H)
        for cx in range(0, n_pre):
            qx, ok_x = pad_preimage(o_w, cx, W, PAD, MODE)  # [BLOCK_W]
            w = qx[None, :] + PAD - t_j[:, None] * DIL  # [K2P, BLOCK_W]
            m_s = m_h[:, None] & (ok_x & m_w)[None, :] & (w >= 0) & (w < W)
            o_s = h[:, None] * W + w  # [K2P, BLOCK_W]
            b_t = tl.load(taps + o_taps[:, None] + o_s, mask=m_s, other=0.0).to(ACC)
            p_go = go + o_plane[None, :, None] + o_s[:, None, :]
            b_go = tl.load(p_go, mask=m_s[:, None, :] & m_c[None, :, None], other=0.0).to(ACC)  # [K2P, BLOCK_C, BLOCK_W]
            b_gx += tl.sum(b_go * b_t[:, None, :], axis=0)
    p_gx = grad_x + o_plane[:, None] + i_h * W + o_w[None, :]
    tl.store(p_gx, b_gx.to(grad_x.dtype.element_ty), mask=m_c[:, None] & m_w[None, :])


# The kernel gradient's program keeps the [K2P, BLOCK_W] taps, their gradient and sample offsets besides
# the sample tile: on 4 warps 7x7 spilled 376 B a thread on sm_90 (float64: 1 KB), on 8 none (48 B).
_GRAD_KERNEL_WARPS = 8


def _config(kernel_size: int, channels: int, width: int) -> dict:
    """Tile sizes: a [K2P, BLOCK_C, BLOCK_W] sample tile of at most 8192 elements."""
    k2p = triton.next_power_of_2(kernel_size * kernel_size)
    block_w = min(64, triton.next_power_of_2(max(width, 1)))
    block_c = max(1, min(triton.next_power_of_2(max(channels, 1)), 8192 // (k2p * block_w)))
    return {"K2P": k2p, "BLOCK_C": block_c, "BLOCK_W": block_w, "num_warps": 4}


def rows_config(cfg: dict, dtype: torch.dtype) -> dict:
    """The rows kernel's tiles: the forward's NCHW ones (BLOCK_W >= CHUNK where W % CHUNK == 0), at most 32
    channels in float64 (64 kept 56 B a thread on the stack at 7x7 on sm_90)."""
    block_c = min(cfg["BLOCK_C"], 32) if dtype == torch.float64 else cfg["BLOCK_C"]
    return {"BLOCK_C": block_c, "BLOCK_W": cfg["BLOCK_W"], "num_warps": cfg["num_warps"]}


def _shape_args(x: torch.Tensor, kernel: torch.Tensor, kernel_size: int, dilation: int, padding_mode: str):
    N, C, H, W = x.shape
    G = kernel.shape[1] // (kernel_size * kernel_size)
    pad = dilation * (kernel_size - 1) // 2
    consts = {"KS": kernel_size, "DIL": dilation, "PAD": pad, "MODE": PAD_MODES[padding_mode], "ACC": tl_acc(x.dtype)}
    return (N, C, H, W, G, C // G), consts


def _fwd_config(channels: int, width: int, channels_last: bool, kernel_size: int, dtype: torch.dtype) -> dict:
    """Tiles of the forward: a [BLOCK_C, BLOCK_W] float32 accumulator of at most 4096 elements, 8 warps
    (16 a thread; 4 warps spilled 808 B at 3x3 float16); channels_last puts the lanes on channels, so
    BLOCK_C >= 32 there. The tap loops are unrolled by a row of taps (fewer instructions a tap) only where
    that fits in registers: 3x3, not float64. Compiled as a launch at 720p specializes it (unit strides,
    sizes divisible by 16), the static sm_90 estimate of 3x3 float16 is 0.30 ms NCHW and 0.11 ms
    channels_last by rows of taps, 0.45 and 0.16 ms not unrolled; all 9 unrolled spilled 432 B a thread
    (NCHW). 5x5 and 7x7 unrolled kept every tap's gather in flight and spilled up to 27.9 KB, 3x3 float64
    40 B. The rows kernel takes the NCHW tiles (0.13 ms there)."""
    block_c = min(64, triton.next_power_of_2(max(channels, 1)))
    if channels_last:
        block_c = max(block_c, 32)
    block_w = max(1, min(triton.next_power_of_2(max(width, 1)), 4096 // block_c))
    return {"BLOCK_C": block_c, "BLOCK_W": block_w, "CL": channels_last, "num_warps": 8,
            "TAP_UNROLL": kernel_size if kernel_size <= 3 and dtype != torch.float64 else 1}


# The rows kernel unrolls its taps' column offsets: up to 3 a side (7x7, or 3x3 at dilation 3).
_ROWS_MAX_PAD = 3


def by_rows(x, kernel, out, kernel_size, dilation) -> bool:
    """Whether the forward runs dynamic_filter2d_fwd_rows_kernel: rows contiguous in x, kernel and out (NCHW),
    whole chunks of CHUNK pixels in a row, and the taps' column offsets within _ROWS_MAX_PAD."""
    return (not is_channels_last(x) and x.shape[3] % CHUNK.value == 0
            and dilation * (kernel_size - 1) // 2 <= _ROWS_MAX_PAD and all(t.stride(3) == 1 for t in (x, kernel, out)))


def forward(x, kernel, kernel_size, dilation, padding_mode, softmax, memory_format=torch.contiguous_format):
    """memory_format: the output's, x's own (the kernels index x and the output alike)."""
    cl = is_channels_last(x)
    out = torch.empty_like(x, memory_format=memory_format)
    (N, C, H, W, G, Cg), consts = _shape_args(x, kernel, kernel_size, dilation, padding_mode)
    if out.numel() == 0:
        return out
    cfg = _fwd_config(Cg, W, cl, kernel_size, x.dtype)
    grid = (triton.cdiv(W, cfg["BLOCK_W"]) * H * N * G,)
    with on_device(x):
        if by_rows(x, kernel, out, kernel_size, dilation):
            dynamic_filter2d_fwd_rows_kernel[grid](
                x, kernel, out, C, H, W, G, Cg, *(t.stride(d) for t in (x, kernel, out) for d in range(3)),
                SOFTMAX=softmax, **consts, **rows_config(cfg, x.dtype))
        else:
            dynamic_filter2d_fwd_kernel[grid](x, kernel, out, C, H, W, G, Cg, *x.stride(), *kernel.stride(),
                                              *out.stride(), SOFTMAX=softmax, **consts, **cfg)
    return out


def backward(grad_out, x, kernel, kernel_size, dilation, padding_mode, softmax, output_mask):
    grad_out, x, kernel = grad_out.contiguous(), x.contiguous(), kernel.contiguous()
    need_x, need_k = output_mask
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    grad_k = torch.empty_like(kernel) if need_k else kernel.new_empty(0)
    (N, C, H, W, G, Cg), consts = _shape_args(x, kernel, kernel_size, dilation, padding_mode)
    if x.numel() == 0:
        return grad_x, grad_k.zero_()
    store_probs = need_x and softmax
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    probs = torch.empty(kernel.shape, dtype=acc_dtype, device=x.device) if store_probs else kernel.new_empty(0)
    cfg = _config(kernel_size, Cg, W)
    with on_device(x):
        if need_k or store_probs:
            grid = (triton.cdiv(W, cfg["BLOCK_W"]) * H * N * G,)
            dynamic_filter2d_bwd_kernel_kernel[grid](
                grad_out, x, kernel, grad_k, probs, C, H, W, G, Cg,
                SOFTMAX=softmax, NEED_GRAD_K=need_k, STORE_PROBS=store_probs, **consts,
                **{**cfg, "num_warps": _GRAD_KERNEL_WARPS},
            )
        if need_x:
            grid = (triton.cdiv(W, cfg["BLOCK_W"]) * H * N * G * triton.cdiv(Cg, cfg["BLOCK_C"]),)
            dynamic_filter2d_bwd_input_kernel[grid](
                grad_out, probs if store_probs else kernel, grad_x, C, H, W, G, Cg,
                N_PRE=num_preimages(consts["MODE"], consts["PAD"]), **consts, **cfg,
            )
    return grad_x, grad_k
