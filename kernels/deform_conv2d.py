"""Triton kernels of modulated deformable convolution (DCNv2, ops.md §1).

Forward: an implicit GEMM. A program owns BLOCK_P output pixels x BLOCK_O output
channels of one (image, weight group). For each channel segment (a channel
range inside one weight group and one offset group) and each tap, it computes
the sampling geometry of its pixels once (offsets and mask read once per
(pixel, tap, group)), gathers the bilinear samples of BLOCK_C channels straight
into registers ([BLOCK_P, BLOCK_C], never written to memory), and multiplies
them with the weight tile on tensor cores (tl.dot, fp32 accumulation).
Inputs may have any strides, so NCHW and channels_last run without copies.

Backward, data: a program owns BLOCK_P pixels of one (image, offset group); per
tap it forms grad_cols = grad_out . weight with tl.dot, reduces grad_offset and
grad_mask over the group's channels in registers, and scatters grad_input to
the 4 bilinear corners with atomics: float32 atomics by default, int64
fixed-point atomics in deterministic mode (integer addition is associative,
so the result is bit-for-bit reproducible).
Backward, weight: split-K over pixel chunks into float32 partials, summed in a
fixed order.
"""

import functools

import torch
import triton
import triton.language as tl

from deblurfast._device_constants import device_constant_cache

from ._triton_common import on_device, tl_dot

# -- sampling geometry ------------------------------------------------------------


@triton.jit
def _geometry(offset, mask, i_n, og, t, o_p, m_p, H, W, Wo, K,
              s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
              KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr):
    """Where tap t of offset group og samples for the output pixels o_p ([BLOCK_P]):
    corner (y0, x0), fractions (ly, lx), mask m and whether the sample is inside.
    i_n is the image of each pixel ([BLOCK_P])."""
    ho, wo = (o_p // Wo).to(tl.int64), (o_p % Wo).to(tl.int64)  # stride products can pass 2^31
    py = (ho * SH - PH + (t // KW) * DH).to(tl.float32)  # [BLOCK_P]
    px = (wo * SW - PW + (t % KW) * DW).to(tl.float32)
    ch = og * K + t  # mask channel; the offset channels are 2*ch, 2*ch + 1
    if HAS_OFFSET:
        p_o = offset + i_n.to(tl.int64) * s_on + (2 * ch).to(tl.int64) * s_oc + ho * s_oh + wo * s_ow
        py += tl.load(p_o, mask=m_p, other=0.0).to(tl.float32)
        px += tl.load(p_o + s_oc, mask=m_p, other=0.0).to(tl.float32)
    if HAS_MASK:
        p_m = mask + i_n.to(tl.int64) * s_mn + ch.to(tl.int64) * s_mc + ho * s_mh + wo * s_mw
        m = tl.load(p_m, mask=m_p, other=0.0).to(tl.float32)
    else:
        m = tl.where(m_p, 1.0, 0.0)
    # torchvision's rule, written so that a NaN position is outside too
    inside = (py > -1.0) & (py < H) & (px > -1.0) & (px < W) & m_p
    py = tl.where(inside, py, 0.0)
    px = tl.where(inside, px, 0.0)
    y0f, x0f = tl.floor(py), tl.floor(px)
    return y0f.to(tl.int32), x0f.to(tl.int32), py - y0f, px - x0f, m, inside


@triton.jit
def _corner(p_xc, y, x, ok, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR: tl.constexpr):
    """Values at (y, x) ([BLOCK_P]) of the planes starting at p_xc ([1, BLOCK_C], or
    [BLOCK_P, BLOCK_C] when pixels come from several images): [BLOCK_P, BLOCK_C],
    zero outside; and where the corner is inside ([BLOCK_P]).
    The strides are runtime values, so the compiler puts a warp's lanes along the tile's last
    axis: PIXEL_MAJOR (NCHW, pixels of a plane contiguous) loads a [BLOCK_C, BLOCK_P] tile and
    transposes it in registers; otherwise (channels_last) lanes go along the channels."""
    ok = ok & (y >= 0) & (y < H) & (x >= 0) & (x < W)
    o_yx = y.to(tl.int64) * s_xh + x.to(tl.int64) * s_xw  # [BLOCK_P]
    if PIXEL_MAJOR:
        b_v = tl.load(tl.trans(p_xc) + o_yx[None, :], mask=m_c[:, None] & ok[None, :], other=0.0)  # [BLOCK_C, BLOCK_P]
        return tl.trans(b_v.to(tl.float32)), ok
    else:
        return tl.load(p_xc + o_yx[:, None], mask=ok[:, None] & m_c[None, :], other=0.0).to(tl.float32), ok


@triton.jit
def _load_pixels_by_channels(p, m_p, m_c, PIXEL_MAJOR: tl.constexpr):
    """The [BLOCK_P, BLOCK_C] tile at pointers p; PIXEL_MAJOR: loaded as [BLOCK_C, BLOCK_P] (see _corner)."""
    if PIXEL_MAJOR:
        return tl.trans(tl.load(tl.trans(p), mask=m_c[:, None] & m_p[None, :], other=0.0))
    else:
        return tl.load(p, mask=m_p[:, None] & m_c[None, :], other=0.0)


@triton.jit
def _sample(p_xc, y0, x0, ly, lx, inside, m_c, H, W, s_xh, s_xw, INTERPOLATE: tl.constexpr,
            PIXEL_MAJOR: tl.constexpr):
    """Bilinear sample [BLOCK_P, BLOCK_C] (without interpolation: the integer position)."""
    v, _ = _corner(p_xc, y0, x0, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
    if INTERPOLATE:
        v01, _ = _corner(p_xc, y0, x0 + 1, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
        v10, _ = _corner(p_xc, y0 + 1, x0, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
        v11, _ = _corner(p_xc, y0 + 1, x0 + 1, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
        hy, hx = (1.0 - ly)[:, None], (1.0 - lx)[:, None]
        v = hy * (hx * v + lx[:, None] * v01) + ly[:, None] * (hx * v10 + lx[:, None] * v11)
    return v


# -- forward ------------------------------------------------------------------------


@triton.jit
def deform_conv2d_fwd_kernel(
    x, offset, mask, weight, bias, out, segs, seg_start,  # segs [S, 4] (og, wg, c_lo, c_hi); seg_start [groups + 1]
    H, W, Wo, HoWo, K, Cin_g, Cout_g, groups,
    s_xn, s_xc, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw, s_yn, s_yc, s_yh, s_yw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    PIXEL_MAJOR: tl.constexpr,
):
    pid = tl.program_id(0)
    n_pb, n_ob = tl.cdiv(HoWo, BLOCK_P), tl.cdiv(Cout_g, BLOCK_O)
    i_pb, i_ob = pid % n_pb, (pid // n_pb) % n_ob
    i_wg, i_n = (pid // (n_pb * n_ob)) % groups, pid // (n_pb * n_ob * groups)

    o_p = i_pb * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P] flat output pixels
    m_p = o_p < HoWo
    v_n = i_n + 0 * o_p  # [BLOCK_P] the image, as a vector
    o_o = i_ob * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O] output channel within the group
    m_o = o_o < Cout_g
    b_acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=tl.float32)
    for s in range(tl.load(seg_start + i_wg), tl.load(seg_start + i_wg + 1)):
        og, c_lo, c_hi = tl.load(segs + 4 * s), tl.load(segs + 4 * s + 2), tl.load(segs + 4 * s + 3)
        for t in range(0, K):
            y0, x0, ly, lx, m, inside = _geometry(
                offset, mask, v_n, og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
                KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
            for c0 in range(c_lo, c_hi, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C] input channels
                m_c = o_c < c_hi
                p_xc = (x + i_n.to(tl.int64) * s_xn + o_c.to(tl.int64) * s_xc)[None, :]  # [1, BLOCK_C]
                b_a = _sample(p_xc, y0, x0, ly, lx, inside, m_c, H, W, s_xh, s_xw, HAS_OFFSET, PIXEL_MAJOR) * m[:, None]
                # weight packed [groups, K, Cin_g, Cout_g]: a [BLOCK_C, BLOCK_O] tile, output channels contiguous
                p_b = weight + (((i_wg * K + t) * Cin_g + o_c - i_wg * Cin_g).to(tl.int64) * Cout_g)[:, None] \
                    + o_o[None, :]
                b_b = tl.load(p_b, mask=m_c[:, None] & m_o[None, :], other=0.0)
                b_acc += tl.dot(b_a.to(DOT), b_b.to(DOT), input_precision=PRECISION)  # [BLOCK_P, BLOCK_O]
    if HAS_BIAS:
        b_acc += tl.load(bias + i_wg * Cout_g + o_o, mask=m_o, other=0.0).to(tl.float32)[None, :]
    ho, wo = (o_p // Wo).to(tl.int64), (o_p % Wo).to(tl.int64)  # stride products can pass 2^31
    p_y = (out + i_n.to(tl.int64) * s_yn + ((i_wg * Cout_g + o_o).to(tl.int64) * s_yc)[None, :]
           + (ho * s_yh + wo * s_yw)[:, None])
    b_y = b_acc.to(out.dtype.element_ty)
    if PIXEL_MAJOR:  # [BLOCK_O, BLOCK_P]: lanes along the pixels (see _corner)
        tl.store(tl.trans(p_y), tl.trans(b_y), mask=m_o[:, None] & m_p[None, :])
    else:
        tl.store(p_y, b_y, mask=m_p[:, None] & m_o[None, :])


# -- backward: input, offset and mask gradients ----------------------------------------


@triton.jit
def _add_corner(p_plane, y, x, b_v, ok, m_c, H, W, scale, FIXED_POINT: tl.constexpr):
    """Atomically add b_v ([BLOCK_P, BLOCK_C]) at (y, x) ([BLOCK_P]) of the planes p_plane ([BLOCK_C]),
    as a [BLOCK_C, BLOCK_P] tile: the planes are NCHW, so a warp's lanes go along the pixels."""
    ok = ok & (y >= 0) & (y < H) & (x >= 0) & (x < W)
    p = p_plane[:, None] + (y.to(tl.int64) * W + x)[None, :]  # [BLOCK_C, BLOCK_P]
    b_v = tl.trans(b_v)
    if FIXED_POINT:
        tl.atomic_add(p, (b_v * scale).to(tl.int64), mask=m_c[:, None] & ok[None, :], sem="relaxed")
    else:
        tl.atomic_add(p, b_v, mask=m_c[:, None] & ok[None, :], sem="relaxed")


@triton.jit
def deform_conv2d_bwd_data_kernel(
    go, x, offset, mask, weight, gx, goff, gmask, segs, seg_start_og, gx_scale,
    Cin, H, W, Wo, HoWo, K, Cin_g, Cout_g, G,
    s_gn, s_gc, s_gh, s_gw, s_xn, s_xc, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr,
    NEED_GX: tl.constexpr, NEED_GOFF: tl.constexpr, NEED_GMASK: tl.constexpr, FIXED_POINT: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    PIXEL_MAJOR: tl.constexpr,
):
    """One program: BLOCK_P pixels of one (image, offset group), all its channels and taps.
    gx: [N, Cin, H, W] contiguous, float32 (atomics) or int64 (FIXED_POINT: sum of value * gx_scale);
    goff [N, 2*G*K, Ho, Wo] and gmask [N, G*K, Ho, Wo] contiguous, written once per element."""
    pid = tl.program_id(0)
    n_pb = tl.cdiv(HoWo, BLOCK_P)
    i_pb, i_og, i_n = pid % n_pb, (pid // n_pb) % G, pid // (n_pb * G)
    scale = tl.load(gx_scale) if FIXED_POINT else 1.0

    o_p = i_pb * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    m_p = o_p < HoWo
    v_n = i_n + 0 * o_p
    ho, wo = (o_p // Wo).to(tl.int64), (o_p % Wo).to(tl.int64)  # stride products can pass 2^31
    o_o = tl.arange(0, BLOCK_O)
    for t in range(0, K):
        y0, x0, ly, lx, m, inside = _geometry(
            offset, mask, v_n, i_og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
            KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
        hy, hx = 1.0 - ly, 1.0 - lx
        b_dy = tl.zeros([BLOCK_P], dtype=tl.float32)
        b_dx = tl.zeros([BLOCK_P], dtype=tl.float32)
        b_dm = tl.zeros([BLOCK_P], dtype=tl.float32)
        for s in range(tl.load(seg_start_og + i_og), tl.load(seg_start_og + i_og + 1)):
            wg, c_lo, c_hi = tl.load(segs + 4 * s + 1), tl.load(segs + 4 * s + 2), tl.load(segs + 4 * s + 3)
            for c0 in range(c_lo, c_hi, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
                m_c = o_c < c_hi
                # grad of the columns: b_gc[p, c] = sum over the weight group's o of grad_out[n, o, p] * w[o, c, t]
                b_gc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
                for o0 in range(0, Cout_g, BLOCK_O):
                    m_o = o0 + o_o < Cout_g
                    o_go = wg * Cout_g + o0 + o_o  # [BLOCK_O]
                    p_go = (go + i_n.to(tl.int64) * s_gn + (o_go.to(tl.int64) * s_gc)[None, :]
                            + (ho * s_gh + wo * s_gw)[:, None])
                    b_go = _load_pixels_by_channels(p_go, m_p, m_o, PIXEL_MAJOR)  # [BLOCK_P, BLOCK_O]
                    # weight packed [groups, K, Cout_g, Cin_g]: input channels (the lanes' axis) contiguous
                    p_wt = weight + (((wg * K + t) * Cout_g + o0 + o_o).to(tl.int64) * Cin_g)[:, None] \
                        + (o_c - wg * Cin_g)[None, :]
                    b_wt = tl.load(p_wt, mask=m_o[:, None] & m_c[None, :], other=0.0)  # [BLOCK_O, BLOCK_C]
                    b_gc += tl.dot(b_go.to(DOT), b_wt.to(DOT), input_precision=PRECISION)
                p_xc = (x + i_n.to(tl.int64) * s_xn + o_c.to(tl.int64) * s_xc)[None, :]  # [1, BLOCK_C]
                if NEED_GOFF or NEED_GMASK:
                    v00, _ = _corner(p_xc, y0, x0, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)  # [BLOCK_P, BLOCK_C]
                    if HAS_OFFSET:
                        v01, _ = _corner(p_xc, y0, x0 + 1, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
                        v10, _ = _corner(p_xc, y0 + 1, x0, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
                        v11, _ = _corner(p_xc, y0 + 1, x0 + 1, inside, m_c, H, W, s_xh, s_xw, PIXEL_MAJOR)
                        b_s = (hy[:, None] * (hx[:, None] * v00 + lx[:, None] * v01)
                               + ly[:, None] * (hx[:, None] * v10 + lx[:, None] * v11))
                        # derivatives of the bilinear blend in y and x
                        b_dy += tl.sum(b_gc * (hx[:, None] * (v10 - v00) + lx[:, None] * (v11 - v01)), axis=1)
                        b_dx += tl.sum(b_gc * (hy[:, None] * (v01 - v00) + ly[:, None] * (v11 - v10)), axis=1)
                    else:
                        b_s = v00
                    b_dm += tl.sum(b_gc * b_s, axis=1)
                if NEED_GX:
                    b_g = b_gc * m[:, None]  # [BLOCK_P, BLOCK_C] gradient of the sample
                    p_plane = gx + (i_n * Cin + o_c).to(tl.int64) * H * W  # [BLOCK_C]
                    if HAS_OFFSET:
                        _add_corner(p_plane, y0, x0, b_g * (hy * hx)[:, None], inside, m_c, H, W, scale, FIXED_POINT)
                        _add_corner(p_plane, y0, x0 + 1, b_g * (hy * lx)[:, None], inside, m_c, H, W, scale,
                                    FIXED_POINT)
                        _add_corner(p_plane, y0 + 1, x0, b_g * (ly * hx)[:, None], inside, m_c, H, W, scale,
                                    FIXED_POINT)
                        _add_corner(p_plane, y0 + 1, x0 + 1, b_g * (ly * lx)[:, None], inside, m_c, H, W, scale,
                                    FIXED_POINT)
                    else:
                        _add_corner(p_plane, y0, x0, b_g, inside, m_c, H, W, scale, FIXED_POINT)
        if NEED_GOFF:
            p_gof = goff + (i_n * 2 * G * K + 2 * (i_og * K + t)).to(tl.int64) * HoWo + o_p
            tl.store(p_gof, (b_dy * m).to(goff.dtype.element_ty), mask=m_p)
            tl.store(p_gof + HoWo, (b_dx * m).to(goff.dtype.element_ty), mask=m_p)
        if NEED_GMASK:
            p_gm = gmask + (i_n * G * K + i_og * K + t).to(tl.int64) * HoWo + o_p
            tl.store(p_gm, b_dm.to(gmask.dtype.element_ty), mask=m_p)


# -- backward: weight gradient ---------------------------------------------------------


@triton.jit
def deform_conv2d_bwd_weight_kernel(
    go, x, offset, mask, partial, blocks,  # blocks [B, 4] (og, wg, c_lo, c_hi): channel blocks <= BLOCK_C
    N, H, W, Wo, HoWo, K, Cin_g, Cout_g, Cout, n_blocks, pixels_per_chunk,
    s_gn, s_gc, s_gh, s_gw, s_xn, s_xc, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    PIXEL_MAJOR: tl.constexpr,
):
    """partial[chunk, o, c - wg*Cin_g, t] = sum over the chunk's (image, pixel)s of
    grad_out[n, o, p] * mask * sample[n, c, t, p], for one channel block, tap and
    block of output channels. Chunks cover N*Ho*Wo pixels in order."""
    pid = tl.program_id(0)
    n_ob = tl.cdiv(Cout_g, BLOCK_O)
    i_b, t, i_ob, i_chunk = pid % n_blocks, (pid // n_blocks) % K, (pid // (n_blocks * K)) % n_ob, \
        pid // (n_blocks * K * n_ob)
    og, wg = tl.load(blocks + 4 * i_b), tl.load(blocks + 4 * i_b + 1)
    c_lo, c_hi = tl.load(blocks + 4 * i_b + 2), tl.load(blocks + 4 * i_b + 3)
    o_c = c_lo + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < c_hi
    o_o = i_ob * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O] within the weight group
    m_o = o_o < Cout_g
    b_acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=tl.float32)
    q_lo = i_chunk * pixels_per_chunk
    q_hi = tl.minimum(q_lo + pixels_per_chunk, N * HoWo)
    for q0 in range(q_lo, q_hi, BLOCK_P):
        o_q = q0 + tl.arange(0, BLOCK_P)  # [BLOCK_P] (image, pixel) pairs
        m_p = o_q < q_hi
        o_n, o_p = o_q // HoWo, o_q % HoWo
        y0, x0, ly, lx, m, inside = _geometry(
            offset, mask, o_n, og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
            KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
        # per-pixel plane pointers: [BLOCK_P, BLOCK_C] through the image index
        p_x = x + (o_n.to(tl.int64) * s_xn)[:, None] + (o_c.to(tl.int64) * s_xc)[None, :]
        b_a = _sample(p_x, y0, x0, ly, lx, inside, m_c, H, W, s_xh, s_xw, HAS_OFFSET, PIXEL_MAJOR) * m[:, None]
        ho, wo = (o_p // Wo).to(tl.int64), (o_p % Wo).to(tl.int64)  # stride products can pass 2^31
        p_go = (go + (o_n.to(tl.int64) * s_gn + ho * s_gh + wo * s_gw)[:, None]
                + ((wg * Cout_g + o_o).to(tl.int64) * s_gc)[None, :])
        b_go = _load_pixels_by_channels(p_go, m_p, m_o, PIXEL_MAJOR)  # [BLOCK_P, BLOCK_O]
        b_acc += tl.dot(tl.trans(b_go.to(DOT)), b_a.to(DOT), input_precision=PRECISION)  # [BLOCK_O, BLOCK_C]
    # partial: [chunks, Cout, Cin_g, K] float32
    p_out = (partial + i_chunk.to(tl.int64) * Cout * Cin_g * K + ((wg * Cout_g + o_o).to(tl.int64) * Cin_g * K)[:, None]
             + ((o_c - wg * Cin_g) * K + t)[None, :])
    tl.store(p_out, b_acc, mask=m_o[:, None] & m_c[None, :])


# -- launchers ----------------------------------------------------------------------------

FIXED_POINT_RANGE = 2.0**61  # deterministic grad_input: |sum| <= bound maps into int64 with headroom


@device_constant_cache(maxsize=128)
def _segments(cin: int, groups: int, offset_groups: int, block_c: int, device: str):
    """Channel segments [S, 4] (og, wg, c_lo, c_hi), each inside one weight group and one
    offset group; where each weight group's and offset group's segments start; and the
    segments cut into channel blocks of at most block_c (the weight-gradient grid)."""
    cin_g, cin_og = cin // groups, cin // offset_groups
    bounds = sorted(set(range(0, cin + 1, cin_g)) | set(range(0, cin + 1, cin_og)))
    segs = [(lo // cin_og, lo // cin_g, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    start_wg = [next((i for i, s in enumerate(segs) if s[1] >= g), len(segs)) for g in range(groups + 1)]
    start_og = [next((i for i, s in enumerate(segs) if s[0] >= g), len(segs)) for g in range(offset_groups + 1)]
    blocks = [(og, wg, c, min(c + block_c, hi)) for og, wg, lo, hi in segs for c in range(lo, hi, block_c)]
    as_tensor = functools.partial(torch.tensor, dtype=torch.int32, device=device)
    return as_tensor(segs), as_tensor(start_wg), as_tensor(start_og), as_tensor(blocks), len(blocks)


def _config(cin_seg: int, cout_g: int, kernel: str = "fwd", pixel_major: bool = True) -> dict:
    """Tile sizes of a kernel ("fwd", "bwd_data", "bwd_weight"); tl.dot needs every dimension >= 16.
    Chosen so the float16 3x3 64-channel configurations keep no stack frame where one was found
    (sm_90, `deblurfast bench --static`): the channels_last forward has 8 warps (1,152 B of stack
    per thread at 4), the NCHW input backward 16-channel blocks (255 registers and a stack at 32)."""
    cfg = {
        "BLOCK_P": 64,
        "BLOCK_C": max(16, min(32, triton.next_power_of_2(cin_seg))),
        "BLOCK_O": max(16, min(64, triton.next_power_of_2(cout_g))),
        "num_warps": 4,
    }
    if kernel == "fwd" and not pixel_major:
        cfg["num_warps"] = 8
    if kernel == "bwd_data" and pixel_major:
        cfg["BLOCK_C"] = 16
    return cfg


def _dot_args(dtype: torch.dtype) -> dict:
    """tl.dot operand dtype and precision. float32 goes through three TF32 products
    (near-float32 accuracy on tensor cores); 16-bit operands are exact."""
    return {"DOT": tl_dot(dtype), "PRECISION": "tf32x3" if dtype == torch.float32 else "ieee"}


def _geometry_args(x, offset, weight, mask, stride, padding, dilation):
    N, Cin, H, W = x.shape
    Cout, Cin_g, kh, kw = weight.shape
    K = kh * kw
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    G = offset.shape[1] // (2 * K) if offset is not None else (mask.shape[1] // K if mask is not None else 1)
    consts = dict(KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], DH=dilation[0], DW=dilation[1],
                  HAS_OFFSET=offset is not None, HAS_MASK=mask is not None, PIXEL_MAJOR=x.stride(1) != 1,
                  **_dot_args(x.dtype))
    return (N, Cin, H, W, Cout, Cin_g, K, Ho, Wo, G), consts


def _strides(t):
    return tuple(t.stride()) if t is not None else (0, 0, 0, 0)


def pack_weight(weight: torch.Tensor, groups: int, for_input_grad: bool = False) -> torch.Tensor:
    """weight [Cout, Cin_g, kh, kw] as [groups, kh*kw, Cin_g, Cout_g] (forward: its [BLOCK_C, BLOCK_O]
    tile with the output channels, along which a warp's lanes lie, contiguous) or [groups, kh*kw,
    Cout_g, Cin_g] (input backward: its [BLOCK_O, BLOCK_C] tile, input channels contiguous). A small
    copy per call."""
    Cout, Cin_g, kh, kw = weight.shape
    w = weight.reshape(groups, Cout // groups, Cin_g, kh * kw)
    return (w.permute(0, 3, 1, 2) if for_input_grad else w.permute(0, 3, 2, 1)).contiguous()


def forward(x, offset, weight, bias, stride, padding, dilation, mask, memory_format=torch.contiguous_format):
    (N, Cin, H, W, Cout, Cin_g, K, Ho, Wo, G), consts = _geometry_args(x, offset, weight, mask, stride, padding,
                                                                        dilation)
    groups = Cin // Cin_g
    out = torch.empty((N, Cout, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=memory_format)
    if out.numel() == 0:
        return out
    if Cin == 0:  # no input channels: the bias alone
        return out.copy_(bias.view(1, Cout, 1, 1).expand_as(out)) if bias is not None else out.zero_()
    cfg = _config(min(Cin_g, Cin // G), Cout // groups, "fwd", consts["PIXEL_MAJOR"])
    segs, start_wg, _, _, _ = _segments(Cin, groups, G, cfg["BLOCK_C"], str(x.device))
    grid = (triton.cdiv(Ho * Wo, cfg["BLOCK_P"]) * triton.cdiv(Cout // groups, cfg["BLOCK_O"]) * groups * N,)
    with on_device(x):
        deform_conv2d_fwd_kernel[grid](
            x, offset if offset is not None else x, mask if mask is not None else x, pack_weight(weight, groups),
            bias if bias is not None else weight, out, segs, start_wg,
            H, W, Wo, Ho * Wo, K, Cin_g, Cout // groups, groups,
            *x.stride(), *_strides(offset), *_strides(mask), *out.stride(),
            HAS_BIAS=bias is not None, **consts, **cfg,
        )
    return out


def fixed_point_scale(grad_out, weight, mask) -> torch.Tensor:
    """A float32 scale s with |sum of contributions to any grad_input element| * s <= 2**61:
    every contribution is grad_cols * mask * bilinear weight, and summed over everything
    their magnitudes are at most numel(grad_out) * max|grad_out| * max_o |weight[o]|_1 * max|mask|.
    The extrema come from torch.aminmax: no full-size temporary (a looser bound than the L1 norm
    of grad_out by a factor numel * max / L1, which costs bits the 2**61 range can spare)."""
    def max_abs(t):
        lo, hi = torch.aminmax(t)
        return torch.maximum(-lo, hi).double()

    bound = grad_out.numel() * max_abs(grad_out) * weight.double().abs().flatten(1).sum(1).max()
    if mask is not None and mask.numel():
        bound = bound * max_abs(mask).clamp(min=1.0)
    scale = torch.where(bound > 0, FIXED_POINT_RANGE / bound, torch.ones_like(bound)).clamp(max=2.0**100)
    return scale.float().reshape(1)


def backward(grad_out, x, offset, weight, bias, stride, padding, dilation, mask, output_mask):
    (N, Cin, H, W, Cout, Cin_g, K, Ho, Wo, G), consts = _geometry_args(x, offset, weight, mask, stride, padding,
                                                                        dilation)
    need_x, need_off, need_w, need_b, need_m = output_mask
    need_off, need_m, need_b = need_off and offset is not None, need_m and mask is not None, need_b and bias is not None
    empty = lambda: x.new_empty(0)  # noqa: E731  (a fresh one per output: outputs must not alias)
    groups = Cin // Cin_g
    Cout_g = Cout // groups
    weight = weight.contiguous()
    gb = grad_out.sum((0, 2, 3)).to(bias.dtype) if need_b else empty()
    fixed_point = need_x and torch.are_deterministic_algorithms_enabled()
    gx_buf = torch.zeros((N, Cin, H, W), dtype=torch.int64 if fixed_point else torch.float32, device=x.device) \
        if need_x else empty()
    goff = torch.empty(offset.shape, dtype=offset.dtype, device=x.device) if need_off else empty()
    gm = torch.empty(mask.shape, dtype=mask.dtype, device=x.device) if need_m else empty()
    gw = empty()
    if grad_out.numel() == 0 or Cin == 0:
        goff.zero_(), gm.zero_()
        gw = torch.zeros_like(weight) if need_w else empty()
        return gx_buf.to(x.dtype), goff, gw, gb, gm
    cfg = _config(min(Cin_g, Cin // G), Cout_g, "bwd_weight", consts["PIXEL_MAJOR"])
    data_cfg = _config(min(Cin_g, Cin // G), Cout_g, "bwd_data", consts["PIXEL_MAJOR"])
    segs, _, start_og, blocks, n_blocks = _segments(Cin, groups, G, cfg["BLOCK_C"], str(x.device))
    strides = (*grad_out.stride(), *x.stride(), *_strides(offset), *_strides(mask))
    with on_device(x):
        if need_x or need_off or need_m:
            scale = fixed_point_scale(grad_out, weight, mask) if fixed_point else gx_buf.new_ones(1, dtype=torch.float32)
            grid = (triton.cdiv(Ho * Wo, data_cfg["BLOCK_P"]) * G * N,)
            deform_conv2d_bwd_data_kernel[grid](
                grad_out, x, offset if offset is not None else x, mask if mask is not None else x,
                pack_weight(weight, groups, for_input_grad=True),
                gx_buf if need_x else x, goff if need_off else x, gm if need_m else x, segs, start_og, scale,
                Cin, H, W, Wo, Ho * Wo, K, Cin_g, Cout_g, G, *strides,
                NEED_GX=need_x, NEED_GOFF=need_off, NEED_GMASK=need_m, FIXED_POINT=fixed_point, **consts,
                **data_cfg,
            )
            if need_x:
                # int64 -> float32 (half the buffer, the output itself for float32), divided in place
                gx = gx_buf.to(torch.float32).div_(scale) if fixed_point else gx_buf
                gx_buf = gx.to(x.dtype)
        if need_w:
            # split-K over (image, pixel) chunks: enough programs to fill the GPU, partials summed in order
            n_ob = triton.cdiv(Cout_g, cfg["BLOCK_O"])
            per_chunk = n_blocks * K * n_ob
            chunks = max(1, min(triton.cdiv(N * Ho * Wo, cfg["BLOCK_P"] * 4), triton.cdiv(1024, per_chunk)))
            pixels_per_chunk = triton.cdiv(triton.cdiv(N * Ho * Wo, chunks), cfg["BLOCK_P"]) * cfg["BLOCK_P"]
            chunks = triton.cdiv(N * Ho * Wo, pixels_per_chunk)
            partial = torch.empty((chunks, Cout, Cin_g, K), dtype=torch.float32, device=x.device)
            deform_conv2d_bwd_weight_kernel[(chunks * per_chunk,)](
                grad_out, x, offset if offset is not None else x, mask if mask is not None else x, partial, blocks,
                N, H, W, Wo, Ho * Wo, K, Cin_g, Cout_g, Cout, n_blocks, pixels_per_chunk, *strides,
                **consts, **cfg,
            )
            gw = partial.sum(0).view(weight.shape).to(weight.dtype)
    return gx_buf, goff, gw, gb, gm
