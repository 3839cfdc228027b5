"""Triton kernels of modulated deformable convolution (DCNv2, ops.md §1).

Every kernel gathers from x in channels_last (an NCHW input is copied once, by
channels_last()): a bilinear corner of BLOCK_C channels is then one contiguous
run, read with 16-byte vector loads, a warp's lanes along the channels. The
geometry of a sample (offsets and mask read once, the 4 corners' addresses,
validity and weights) is computed once per (pixel, tap) and shared by every
channel block.

Forward: an implicit GEMM. A program owns BLOCK_P output pixels x BLOCK_O output
channels of one (image, weight group); per channel segment (inside one weight
group and one offset group) and tap it blends the 4 gathered corners into a
[BLOCK_P, BLOCK_C] tile in registers and multiplies it with the weight tile on
tensor cores (tl.dot, fp32 accumulation). The weight is packed into the dot's
layout once per weight version (packed_weight). The output keeps the input's
layout, stored with vector stores along its contiguous axis.

Backward, data: a program owns BLOCK_P pixels of one (image, offset group); per
tap it forms grad_cols = grad_out . weight with tl.dot (the grad_out tile loaded
once, before the tap loop). Two launches of the kernel split the work: one
scatters grad_input to the 4 bilinear corners with vector atomics into a
channels_last buffer (float32 by default; int64 fixed point in deterministic
mode: integer addition is associative, so the result is bit-for-bit
reproducible), the other gathers the corners and reduces grad_offset and
grad_mask over the group's channels in registers (per corner the sum over the
channels of its values times grad_cols; the gradients are per-pixel blends of
those 4 sums).
Backward, weight: split-K over chunks of pixel tiles (each tile in one image)
into float32 partials, summed in a fixed order.

A sample's corner offsets within its image are int32 (the Triton backend
refuses images of 2**31 elements or more: deblurfast/ops/deform_conv2d);
an image's offset in its batch is int64.
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
def _pixel_offsets(o_p, Wo, s_h, s_w, FLAT: tl.constexpr):
    """Element offsets of the flat output pixels o_p ([BLOCK_P]) in a tensor of row and column strides s_h, s_w.
    FLAT: s_h == Wo * s_w (a contiguous NCHW or channels_last tensor): o_p * s_w, which the compiler sees
    is contiguous where s_w is 1 (vector loads along the pixels), and no division."""
    if FLAT:
        return o_p.to(tl.int64) * s_w
    else:
        return (o_p // Wo).to(tl.int64) * s_h + (o_p % Wo).to(tl.int64) * s_w  # products can pass 2^31


@triton.jit
def _load_pixels_by_channels(p, m_p, m_c, PIXEL_MAJOR: tl.constexpr):
    """The [BLOCK_P, BLOCK_C] tile at pointers p; PIXEL_MAJOR (NCHW, pixels contiguous): loaded as
    [BLOCK_C, BLOCK_P] and transposed in registers, since with runtime strides the compiler puts a
    warp's lanes along the tile's last axis."""
    if PIXEL_MAJOR:
        return tl.trans(tl.load(tl.trans(p), mask=m_c[:, None] & m_p[None, :], other=0.0))
    else:
        return tl.load(p, mask=m_p[:, None] & m_c[None, :], other=0.0)


@triton.jit
def _corners(y0, x0, ly, lx, m, inside, H, W, s_xh, s_xw, VEC: tl.constexpr):
    """The 4 bilinear corners of each sample ([BLOCK_P]): their element offsets in a plane, whether each is in
    the image (a corner outside reads nothing: a NaN beside the image must not leak in as NaN * 0), and
    their weights with the mask folded in. Computed once per (pixel, tap) and shared by every channel block.
    VEC: the launcher checked every offset is a multiple of VEC elements."""
    y1, x1 = y0 + 1, x0 + 1
    hy, hx = 1.0 - ly, 1.0 - lx
    in_y0, in_y1 = (y0 >= 0) & (y0 < H) & inside, (y1 >= 0) & (y1 < H) & inside
    in_x0, in_x1 = (x0 >= 0) & (x0 < W), (x1 >= 0) & (x1 < W)
    r0, r1 = y0 * s_xh, y1 * s_xh
    c0, c1 = x0 * s_xw, x1 * s_xw
    return (tl.multiple_of(r0 + c0, VEC), tl.multiple_of(r0 + c1, VEC), tl.multiple_of(r1 + c0, VEC),
            tl.multiple_of(r1 + c1, VEC), in_y0 & in_x0, in_y0 & in_x1, in_y1 & in_x0, in_y1 & in_x1,
            hy * hx * m, hy * lx * m, ly * hx * m, ly * lx * m)


@triton.jit
def _gather(p_xc, o, ok, m_c, EVEN_C: tl.constexpr, AS: tl.constexpr):
    """[BLOCK_P, BLOCK_C] values at plane offsets o ([BLOCK_P]; zero where not ok) of the channels p_xc
    ([1, BLOCK_C], contiguous: a warp's lanes and each lane's vector along the channels), as AS.
    The mask is constant along the channels (EVEN_C), so the loads stay vector loads."""
    if EVEN_C:
        return tl.load(p_xc + o[:, None], mask=ok[:, None], other=0.0).to(AS)
    else:
        return tl.load(p_xc + o[:, None], mask=ok[:, None] & m_c[None, :], other=0.0).to(AS)


@triton.jit
def _blend(p_xc, o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11, m_c, EVEN_C: tl.constexpr,
           BLEND: tl.constexpr, HAS_OFFSET: tl.constexpr):
    """The bilinear samples [BLOCK_P, BLOCK_C] of the channels p_xc: the 4 gathered corners weighted by
    w00..w11 ([BLOCK_P], the mask folded in), in BLEND (see _config). Without offsets every sample sits on
    its corner (0, 0)."""
    b_a = w00.to(BLEND)[:, None] * _gather(p_xc, o00, k00, m_c, EVEN_C, BLEND)
    if HAS_OFFSET:
        b_a = tl.fma(w01.to(BLEND)[:, None], _gather(p_xc, o01, k01, m_c, EVEN_C, BLEND), b_a)
        b_a = tl.fma(w10.to(BLEND)[:, None], _gather(p_xc, o10, k10, m_c, EVEN_C, BLEND), b_a)
        b_a = tl.fma(w11.to(BLEND)[:, None], _gather(p_xc, o11, k11, m_c, EVEN_C, BLEND), b_a)
    return b_a


# -- forward ------------------------------------------------------------------------


@triton.jit
def deform_conv2d_fwd_kernel(
    x, offset, mask, weight, bias, out, segs, seg_start,  # segs [S, 4] (og, wg, c_lo, c_hi); seg_start [groups + 1]
    H, W, Wo, HoWo, K, Cin_g, Cout_g, groups,
    s_xn, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw, s_yn, s_yc, s_yw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    VEC: tl.constexpr, EVEN: tl.constexpr, OUT_PIXEL_MAJOR: tl.constexpr, OUT_VEC: tl.constexpr,
    BLEND: tl.constexpr,
):
    """x is channels_last contiguous (channels_last(x)): a corner of BLOCK_C channels is one contiguous
    run, gathered with vector loads. BLEND: the dtype of the bilinear blend (see _config). EVEN: every
    channel segment is a multiple of BLOCK_C and Cout_g of BLOCK_O (no channel masks). out: contiguous
    NCHW (OUT_PIXEL_MAJOR: stored as [BLOCK_O, BLOCK_P], s_yc = Ho*Wo) or channels_last (s_yw = Cout);
    OUT_VEC divides s_yn, Cout_g and s_yc or s_yw."""
    pid = tl.program_id(0)
    n_pb, n_ob = tl.cdiv(HoWo, BLOCK_P), tl.cdiv(Cout_g, BLOCK_O)
    i_pb, i_ob = pid % n_pb, (pid // n_pb) % n_ob
    i_wg, i_n = (pid // (n_pb * n_ob)) % groups, pid // (n_pb * n_ob * groups)

    o_p = i_pb * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P] flat output pixels
    m_p = o_p < HoWo
    v_n = i_n + 0 * o_p  # [BLOCK_P] the image, as a vector
    o_o = i_ob * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O] output channel within the group
    m_o = o_o < Cout_g
    p_xn = x + tl.multiple_of(i_n.to(tl.int64) * s_xn, VEC)
    b_acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=tl.float32)
    for s in range(tl.load(seg_start + i_wg), tl.load(seg_start + i_wg + 1)):
        og, c_hi = tl.load(segs + 4 * s), tl.load(segs + 4 * s + 3)
        c_lo = tl.multiple_of(tl.load(segs + 4 * s + 2), VEC)
        for t in range(0, K):
            y0, x0, ly, lx, m, inside = _geometry(
                offset, mask, v_n, og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
                KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
            o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11 = _corners(
                y0, x0, ly, lx, m, inside, H, W, s_xh, s_xw, VEC)
            for c0 in range(c_lo, c_hi, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C] input channels
                m_c = o_c < c_hi
                b_a = _blend((p_xn + o_c)[None, :], o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11,
                             m_c, EVEN, BLEND, HAS_OFFSET)  # [BLOCK_P, BLOCK_C]
                # weight packed [groups, K, Cin_g, Cout_g]: a [BLOCK_C, BLOCK_O] tile, output channels contiguous
                o_wr = tl.multiple_of(((i_wg * K + t) * Cin_g + o_c - i_wg * Cin_g).to(tl.int64) * Cout_g, VEC)
                p_b = weight + o_wr[:, None] + o_o[None, :]
                if EVEN:
                    b_b = tl.load(p_b)
                else:
                    b_b = tl.load(p_b, mask=m_c[:, None] & m_o[None, :], other=0.0)
                b_acc += tl.dot(b_a.to(DOT), b_b.to(DOT), input_precision=PRECISION)  # [BLOCK_P, BLOCK_O]
    if HAS_BIAS:
        b_acc += tl.load(bias + i_wg * Cout_g + o_o, mask=m_o, other=0.0).to(tl.float32)[None, :]
    # out is the launcher's own contiguous NCHW or channels_last tensor: pixels (NCHW) or channels
    # (channels_last) have stride 1, so the store is a vector one along them
    p_yn = out + tl.multiple_of(i_n.to(tl.int64) * s_yn, OUT_VEC)
    o_yo = tl.multiple_of(i_wg * Cout_g + i_ob * BLOCK_O, OUT_VEC) + tl.arange(0, BLOCK_O)  # [BLOCK_O] channel
    b_y = b_acc.to(out.dtype.element_ty)
    if OUT_PIXEL_MAJOR:  # [BLOCK_O, BLOCK_P]: a warp's lanes along the pixels
        p_y = p_yn + tl.multiple_of(o_yo.to(tl.int64) * s_yc, OUT_VEC)[:, None] + o_p[None, :]
        m_pv = tl.max_constancy(m_p, OUT_VEC)  # Ho*Wo is a multiple of OUT_VEC: whole vectors in or out
        if EVEN:
            tl.store(p_y, tl.trans(b_y), mask=m_pv[None, :])
        else:
            tl.store(p_y, tl.trans(b_y), mask=m_o[:, None] & m_pv[None, :])
    else:
        p_y = p_yn + tl.multiple_of(o_p.to(tl.int64) * s_yw, OUT_VEC)[:, None] + o_yo[None, :]
        if EVEN:
            tl.store(p_y, b_y, mask=m_p[:, None])
        else:
            tl.store(p_y, b_y, mask=m_p[:, None] & m_o[None, :])


# -- backward: input, offset and mask gradients ----------------------------------------


@triton.jit
def _scatter(p_gc, o, ok, b_v, m_c, scale, FIXED_POINT: tl.constexpr, EVEN_C: tl.constexpr):
    """Atomically add b_v ([BLOCK_P, BLOCK_C]) at plane offsets o ([BLOCK_P], where ok) of the channels p_gc
    ([1, BLOCK_C]) of the channels-innermost grad-input buffer: lanes along the channels."""
    p = p_gc + o[:, None]
    m = ok[:, None] if EVEN_C else ok[:, None] & m_c[None, :]
    if FIXED_POINT:
        tl.atomic_add(p, (b_v * scale).to(tl.int64), mask=m, sem="relaxed")
    else:
        tl.atomic_add(p, b_v, mask=m, sem="relaxed")


@triton.jit
def deform_conv2d_bwd_data_kernel(
    go, x, offset, mask, weight, gx, goff, gmask, segs, seg_start_og, gx_scale,
    H, W, Wo, HoWo, K, Cin_g, Cout_g, G,
    s_gn, s_gc, s_gh, s_gw, s_xn, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr,
    NEED_GX: tl.constexpr, NEED_GOFF: tl.constexpr, NEED_GMASK: tl.constexpr, FIXED_POINT: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    PIXEL_MAJOR: tl.constexpr, VEC: tl.constexpr, EVEN: tl.constexpr, HOIST_GO: tl.constexpr,
    FLAT_GO: tl.constexpr,
):
    """One program: BLOCK_P pixels of one (image, offset group), all its channels and taps. Launched
    twice, split by what it computes: the grad-input scatter (NEED_GX: atomics, no gathers) and the
    offset/mask gradients (gathers, no atomics), each with the registers of its part only.
    x and gx are channels_last contiguous (same strides): gx float32 (atomics) or int64 (FIXED_POINT:
    sum of value * gx_scale); goff [N, 2*G*K, Ho, Wo] and gmask [N, G*K, Ho, Wo] contiguous.
    HOIST_GO: the offset group lies in one weight group and BLOCK_O covers Cout_g (the sweep's case), so
    grad_out's one tile is loaded once, before the tap loop (else per tap and block: choosing at run time
    costs ~100 registers). PIXEL_MAJOR: grad_out is NCHW, loaded as [BLOCK_O, BLOCK_P]."""
    pid = tl.program_id(0)
    n_pb = tl.cdiv(HoWo, BLOCK_P)
    i_pb, i_og, i_n = pid % n_pb, (pid // n_pb) % G, pid // (n_pb * G)
    scale = tl.load(gx_scale) if FIXED_POINT else 1.0

    o_p = i_pb * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    m_p = o_p < HoWo
    v_n = i_n + 0 * o_p
    o_xn = tl.multiple_of(i_n.to(tl.int64) * s_xn, VEC)
    o_o = tl.arange(0, BLOCK_O)
    s_lo, s_hi = tl.load(seg_start_og + i_og), tl.load(seg_start_og + i_og + 1)
    p_go = go + i_n.to(tl.int64) * s_gn + _pixel_offsets(o_p, Wo, s_gh, s_gw, FLAT_GO)[:, None]  # [BLOCK_P, 1]
    if HOIST_GO:  # the offset group's one grad_out tile, loaded once for all taps
        b_go0 = _load_pixels_by_channels(
            p_go + ((tl.load(segs + 4 * s_lo + 1) * Cout_g + o_o).to(tl.int64) * s_gc)[None, :], m_p, o_o < Cout_g,
            PIXEL_MAJOR).to(DOT)  # [BLOCK_P, BLOCK_O]
    for t in range(0, K):
        y0, x0, ly, lx, m, inside = _geometry(
            offset, mask, v_n, i_og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
            KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
        o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11 = _corners(
            y0, x0, ly, lx, m, inside, H, W, s_xh, s_xw, VEC)
        # b_sij: the corner's values times the columns' gradient, summed over the group's channels ([BLOCK_P]);
        # the offset and mask gradients are per-pixel blends of these 4 sums
        b_s00 = tl.zeros([BLOCK_P], dtype=tl.float32)
        b_s01 = tl.zeros([BLOCK_P], dtype=tl.float32)
        b_s10 = tl.zeros([BLOCK_P], dtype=tl.float32)
        b_s11 = tl.zeros([BLOCK_P], dtype=tl.float32)
        for s in range(s_lo, s_hi):
            wg, c_hi = tl.load(segs + 4 * s + 1), tl.load(segs + 4 * s + 3)
            c_lo = tl.multiple_of(tl.load(segs + 4 * s + 2), VEC)
            for c0 in range(c_lo, c_hi, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
                m_c = o_c < c_hi
                # grad of the columns: b_gc[p, c] = sum over the weight group's o of grad_out[n, o, p] * w[o, c, t]
                b_gc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
                for o0 in range(0, Cout_g, BLOCK_O):
                    m_o = o0 + o_o < Cout_g
                    if HOIST_GO:
                        b_go = b_go0
                    else:
                        b_go = _load_pixels_by_channels(
                            p_go + ((wg * Cout_g + o0 + o_o).to(tl.int64) * s_gc)[None, :], m_p, m_o,
                            PIXEL_MAJOR).to(DOT)
                    # weight packed [groups, K, Cout_g, Cin_g]: input channels contiguous
                    o_wr = tl.multiple_of(((wg * K + t) * Cout_g + o0 + o_o).to(tl.int64) * Cin_g, VEC)
                    o_wc = tl.multiple_of(c0 - wg * Cin_g, VEC) + tl.arange(0, BLOCK_C)  # [BLOCK_C] within the group
                    p_wt = weight + o_wr[:, None] + o_wc[None, :]
                    if EVEN:
                        b_wt = tl.load(p_wt)  # [BLOCK_O, BLOCK_C]
                    else:
                        b_wt = tl.load(p_wt, mask=m_o[:, None] & m_c[None, :], other=0.0)
                    b_gc += tl.dot(b_go, b_wt.to(DOT), input_precision=PRECISION)  # [BLOCK_P, BLOCK_C]
                if NEED_GOFF or NEED_GMASK:
                    p_xc = (x + o_xn + o_c)[None, :]  # [1, BLOCK_C]
                    b_s00 += tl.sum(b_gc * _gather(p_xc, o00, k00, m_c, EVEN, tl.float32), axis=1)
                    if HAS_OFFSET:
                        b_s01 += tl.sum(b_gc * _gather(p_xc, o01, k01, m_c, EVEN, tl.float32), axis=1)
                        b_s10 += tl.sum(b_gc * _gather(p_xc, o10, k10, m_c, EVEN, tl.float32), axis=1)
                        b_s11 += tl.sum(b_gc * _gather(p_xc, o11, k11, m_c, EVEN, tl.float32), axis=1)
                if NEED_GX:  # the sample's gradient b_gc * mask to its corners, bilinear weights folded in
                    p_gc = (gx + o_xn + o_c)[None, :]
                    _scatter(p_gc, o00, k00, b_gc * w00[:, None], m_c, scale, FIXED_POINT, EVEN)
                    if HAS_OFFSET:
                        _scatter(p_gc, o01, k01, b_gc * w01[:, None], m_c, scale, FIXED_POINT, EVEN)
                        _scatter(p_gc, o10, k10, b_gc * w10[:, None], m_c, scale, FIXED_POINT, EVEN)
                        _scatter(p_gc, o11, k11, b_gc * w11[:, None], m_c, scale, FIXED_POINT, EVEN)
        if HAS_OFFSET:
            hy, hx = 1.0 - ly, 1.0 - lx
            # the bilinear blend, and its derivatives in y and x
            b_dm = hy * (hx * b_s00 + lx * b_s01) + ly * (hx * b_s10 + lx * b_s11)
            b_dy = hx * (b_s10 - b_s00) + lx * (b_s11 - b_s01)
            b_dx = hy * (b_s01 - b_s00) + ly * (b_s11 - b_s10)
        else:
            b_dm = b_s00
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
    N, H, W, Wo, HoWo, K, Cin_g, Cout_g, Cout, n_blocks, tiles_per_chunk,
    s_gn, s_gc, s_gh, s_gw, s_xn, s_xh, s_xw, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh, s_mw,
    KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_OFFSET: tl.constexpr, HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    PIXEL_MAJOR: tl.constexpr, VEC: tl.constexpr, EVEN: tl.constexpr, BLEND: tl.constexpr, FLAT_GO: tl.constexpr,
):
    """partial[chunk, o, c - wg*Cin_g, t] = sum over the chunk's pixel tiles of
    grad_out[n, o, p] * mask * sample[n, c, t, p], for one channel block, tap and
    block of output channels. Chunks cover the N * cdiv(Ho*Wo, BLOCK_P) tiles (each in one image) in order.
    x: channels innermost (channel stride 1), gathered with vector loads as in the forward."""
    pid = tl.program_id(0)
    n_ob = tl.cdiv(Cout_g, BLOCK_O)
    i_b, t, i_ob, i_chunk = pid % n_blocks, (pid // n_blocks) % K, (pid // (n_blocks * K)) % n_ob, \
        pid // (n_blocks * K * n_ob)
    og, wg = tl.load(blocks + 4 * i_b), tl.load(blocks + 4 * i_b + 1)
    c_lo, c_hi = tl.multiple_of(tl.load(blocks + 4 * i_b + 2), VEC), tl.load(blocks + 4 * i_b + 3)
    o_c = c_lo + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    m_c = o_c < c_hi
    o_o = i_ob * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O] within the weight group
    m_o = o_o < Cout_g
    p_xc = (x + o_c)[None, :]  # [1, BLOCK_C]
    b_acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=tl.float32)
    n_pb = tl.cdiv(HoWo, BLOCK_P)
    q_lo = i_chunk * tiles_per_chunk
    for q in range(q_lo, tl.minimum(q_lo + tiles_per_chunk, N * n_pb)):
        i_n = q // n_pb
        o_p = (q % n_pb) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P] pixels of image i_n
        m_p = o_p < HoWo
        y0, x0, ly, lx, m, inside = _geometry(
            offset, mask, i_n + 0 * o_p, og, t, o_p, m_p, H, W, Wo, K, s_on, s_oc, s_oh, s_ow, s_mn, s_mc, s_mh,
            s_mw, KW, SH, SW, PH, PW, DH, DW, HAS_OFFSET, HAS_MASK)
        o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11 = _corners(
            y0, x0, ly, lx, m, inside, H, W, s_xh, s_xw, VEC)
        p_xn = p_xc + tl.multiple_of(i_n.to(tl.int64) * s_xn, VEC)  # [1, BLOCK_C] the image's channels
        b_a = _blend(p_xn, o00, o01, o10, o11, k00, k01, k10, k11, w00, w01, w10, w11, m_c, EVEN, BLEND,
                     HAS_OFFSET)  # [BLOCK_P, BLOCK_C]
        p_go = (go + i_n.to(tl.int64) * s_gn + _pixel_offsets(o_p, Wo, s_gh, s_gw, FLAT_GO)[:, None]
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


def _config(cin_seg: int, cout_g: int, kernel: str = "fwd", dtype: torch.dtype = torch.float16,
            fixed_point: bool = False) -> dict:
    """Tile sizes and launch options of a kernel: "fwd", "bwd_data" (the grad-input scatter), "bwd_offmask"
    (the offset and mask gradients, the same kernel) or "bwd_weight". A small table keyed on the kernel,
    the channels and the dtype, read off the static report (`deblurfast bench --static`, sm_90) so that no
    configuration of the hot path keeps a stack frame: 8 warps, whole 64-channel blocks where the registers
    allow, and maxnreg=128 (16 resident warps per SM) where that costs no spills. float32 goes through three
    TF32 products per dot (operands split in two), so its blocks are smaller. tl.dot needs dimensions >= 16."""
    fp32, half = dtype == torch.float32, dtype == torch.float16
    # The forward and the weight gradient blend a sample's 4 corners before their product on tensor cores,
    # float16 in float16 (HFMA2: 32 instructions for 16 samples a thread where float32 took 128 with the
    # conversions; torchvision's half kernel also blends in half). bfloat16's 8-bit mantissa would lose too
    # much: it blends in float32, as float32 does.
    blend = tl.float16 if half else tl.float32
    cfg = {
        "BLOCK_P": 64,
        "BLOCK_C": max(16, min(32, triton.next_power_of_2(cin_seg))),
        "BLOCK_O": max(16, min(64, triton.next_power_of_2(cout_g))),
        "num_warps": 8,
    }
    if kernel == "fwd":
        # 16-bit with the output channels in one block: 128 pixels x 32 channels, each (pixel, tap)'s geometry
        # shared by 16 channels a thread where 64 x 64 tiles share it by 8 (static sm_90 estimate at the
        # sweep, instructions counted per loop depth: 0.359 ms channels_last against 0.431; 128 x 64 spilled
        # 144-168 B, and 128 x 32 spilled 8 B at 128 output channels). float16 in one stage: the software
        # pipeline's prologue runs per tap for 2 channel blocks (0.370 ms at 2 stages, and an 8 B stack);
        # bfloat16 in 2 (1 spilled 8 B).
        wide = not fp32 and cout_g <= cfg["BLOCK_O"]
        cfg.update(BLOCK_C=max(16, min(16 if fp32 else 32 if wide else 64, triton.next_power_of_2(cin_seg))),
                   num_stages=1 if half else 2, maxnreg=128, BLOCK_P=128 if wide else 64, BLEND=blend)
    elif kernel in ("bwd_data", "bwd_offmask"):
        if fp32 and kernel == "bwd_data":
            cfg["BLOCK_C"] = 16
            if fixed_point:  # the int64 atomics' registers: 104 B spilled a thread at 64 pixels and 3 stages
                cfg.update(BLOCK_P=32, num_stages=2)
        if cout_g > cfg["BLOCK_O"]:  # grad_out is reloaded per tap and block (SAPHNet's 128 channels spilled
            if fp32:                  # 32-376 B a thread with these tiles)
                cfg.update(BLOCK_O=32, num_stages=1)
            elif kernel == "bwd_data":
                cfg["BLOCK_C"] = 16
        if not fp32 and not fixed_point:  # the int64 atomics of deterministic mode would spill at 128
            cfg["maxnreg"] = 128
    elif kernel == "bwd_weight":
        cfg.update(BLOCK_C=max(16, min(32 if fp32 else 64, triton.next_power_of_2(cin_seg))), num_stages=2,
                   BLEND=blend)
        if not fp32:
            cfg["maxnreg"] = 128
    return cfg


def _alignment(x: torch.Tensor, cin_g: int, cin_og: int, cout_g: int, cfg: dict) -> dict:
    """VEC: elements per 16 bytes when x's data, its image/row/column strides and every channel-block start
    (segment bounds, weight rows) are multiples of it, so the gathers may be 16-byte vector loads (the
    kernel hints it with tl.multiple_of); else 1. EVEN: segments and output groups fill whole blocks."""
    vec = 16 // x.element_size()
    aligned = x.data_ptr() % 16 == 0 and all(v % vec == 0 for v in (x.stride(0), x.stride(2), x.stride(3), cin_g,
                                                                    cin_og, cout_g))
    even = cin_g % cfg["BLOCK_C"] == 0 and cin_og % cfg["BLOCK_C"] == 0 and cout_g % cfg["BLOCK_O"] == 0
    return {"VEC": vec if aligned else 1, "EVEN": even}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x as a channels_last contiguous tensor, the layout the kernels gather from: a sample's channels are
    one contiguous run (vector loads). An NCHW input is copied once: one read and write of x, against a
    gather per tap and corner with lanes along the pixels."""
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous(memory_format=torch.channels_last)


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
    Cout_g, Cin_g] (input backward: its [BLOCK_O, BLOCK_C] tile, input channels contiguous)."""
    Cout, Cin_g, kh, kw = weight.shape
    w = weight.reshape(groups, Cout // groups, Cin_g, kh * kw)
    return (w.permute(0, 3, 1, 2) if for_input_grad else w.permute(0, 3, 2, 1)).contiguous()


_PACKED: dict = {}  # (id(weight), groups, for_input_grad) -> (weakref to weight, its stamp, packed)
_PACKED_MAX = 32


def packed_weight(weight: torch.Tensor, groups: int, for_input_grad: bool = False) -> torch.Tensor:
    """pack_weight, once per weight version: a layer's weight is packed again only after it changed
    in place (an optimizer step bumps _version). The weak reference tells a new tensor that reuses
    a dead one's id apart; the data pointer, a `.data` swap."""
    import weakref

    key = (id(weight), groups, for_input_grad)
    stamp = (weight._version, weight.data_ptr(), weight.dtype, weight.shape, weight.stride(), weight.device)
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == stamp:
        return hit[2]
    packed = pack_weight(weight.detach(), groups, for_input_grad)
    if len(_PACKED) >= _PACKED_MAX:
        _PACKED.pop(next(iter(_PACKED)))
    _PACKED[key] = (weakref.ref(weight), stamp, packed)
    return packed


def forward(x, offset, weight, bias, stride, padding, dilation, mask, memory_format=torch.contiguous_format):
    (N, Cin, H, W, Cout, Cin_g, K, Ho, Wo, G), consts = _geometry_args(x, offset, weight, mask, stride, padding,
                                                                        dilation)
    consts.pop("PIXEL_MAJOR")
    groups = Cin // Cin_g
    out = torch.empty((N, Cout, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=memory_format)
    if out.numel() == 0:
        return out
    if Cin == 0:  # no input channels: the bias alone
        return out.copy_(bias.view(1, Cout, 1, 1).expand_as(out)) if bias is not None else out.zero_()
    cfg = _config(min(Cin_g, Cin // G), Cout // groups, "fwd", dtype=x.dtype)
    x = channels_last(x)
    out_pixel_major = out.stride(1) != 1  # else channels_last, or one pixel per image: channels contiguous
    vec = 16 // out.element_size()
    out_vec = vec if all(v % vec == 0 for v in (out.stride(0), out.stride(1) if out_pixel_major else out.stride(3),
                                                 Ho * Wo if out_pixel_major else Cout // groups)) else 1
    segs, start_wg, _, _, _ = _segments(Cin, groups, G, cfg["BLOCK_C"], str(x.device))
    grid = (triton.cdiv(Ho * Wo, cfg["BLOCK_P"]) * triton.cdiv(Cout // groups, cfg["BLOCK_O"]) * groups * N,)
    with on_device(x):
        deform_conv2d_fwd_kernel[grid](
            x, offset if offset is not None else x, mask if mask is not None else x, packed_weight(weight, groups),
            bias if bias is not None else weight, out, segs, start_wg,
            H, W, Wo, Ho * Wo, K, Cin_g, Cout // groups, groups,
            x.stride(0), x.stride(2), x.stride(3), *_strides(offset), *_strides(mask),
            out.stride(0), out.stride(1), out.stride(3),
            HAS_BIAS=bias is not None, OUT_PIXEL_MAJOR=out_pixel_major, OUT_VEC=out_vec, **consts, **cfg,
            **_alignment(x, Cin_g, Cin // G, Cout // groups, cfg),
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


def weight_chunks(tiles: int, per_chunk: int) -> tuple[int, int]:
    """(chunks, tiles per chunk) of the weight gradient's split-K over the pixel tiles, for per_chunk programs
    a chunk: enough programs to fill the GPU, at least 4 tiles a chunk."""
    chunks = max(1, min(triton.cdiv(tiles, 4), triton.cdiv(1024, per_chunk)))
    tiles_per_chunk = triton.cdiv(tiles, chunks)
    return triton.cdiv(tiles, tiles_per_chunk), tiles_per_chunk


def backward(grad_out, x, offset, weight, bias, stride, padding, dilation, mask, output_mask):
    (N, Cin, H, W, Cout, Cin_g, K, Ho, Wo, G), consts = _geometry_args(x, offset, weight, mask, stride, padding,
                                                                        dilation)
    consts["PIXEL_MAJOR"] = grad_out.stride(1) != 1  # how grad_out's tiles are read
    consts["FLAT_GO"] = grad_out.stride(2) == Wo * grad_out.stride(3)  # its pixels one axis (see _pixel_offsets)
    need_x, need_off, need_w, need_b, need_m = output_mask
    need_off, need_m, need_b = need_off and offset is not None, need_m and mask is not None, need_b and bias is not None
    empty = lambda: x.new_empty(0)  # noqa: E731  (a fresh one per output: outputs must not alias)
    groups = Cin // Cin_g
    Cout_g = Cout // groups
    weight = weight.contiguous()
    gb = grad_out.sum((0, 2, 3)).to(bias.dtype) if need_b else empty()
    fixed_point = need_x and torch.are_deterministic_algorithms_enabled()
    # the grad-input buffer is channels_last like the x the kernels read (atomics along the channels)
    gx_buf = torch.zeros((N, H, W, Cin), dtype=torch.int64 if fixed_point else torch.float32,
                         device=x.device).permute(0, 3, 1, 2) if need_x else empty()
    # grad_input in the input's layout (channels_last for a channels_last input, as the forward's output)
    gx_format = torch.channels_last if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    goff = torch.empty(offset.shape, dtype=offset.dtype, device=x.device) if need_off else empty()
    gm = torch.empty(mask.shape, dtype=mask.dtype, device=x.device) if need_m else empty()
    gw = empty()
    if grad_out.numel() == 0 or Cin == 0:
        goff.zero_(), gm.zero_()
        gw = torch.zeros_like(weight) if need_w else empty()
        return gx_buf.to(x.dtype, memory_format=gx_format), goff, gw, gb, gm
    x = channels_last(x)
    cfg = _config(min(Cin_g, Cin // G), Cout_g, "bwd_weight", dtype=x.dtype)
    segs, _, start_og, blocks, n_blocks = _segments(Cin, groups, G, cfg["BLOCK_C"], str(x.device))
    strides = (*grad_out.stride(), x.stride(0), x.stride(2), x.stride(3), *_strides(offset), *_strides(mask))
    with on_device(x):
        if need_x or need_off or need_m:
            scale = fixed_point_scale(grad_out, weight, mask) if fixed_point else gx_buf.new_ones(1, dtype=torch.float32)
            # two launches: the grad-input scatter, and the offset and mask gradients
            for part in ((True, False, False), (False, need_off, need_m)):
                if not any(part) or (part[0] and not need_x):
                    continue
                data_cfg = _config(min(Cin_g, Cin // G), Cout_g, "bwd_data" if part[0] else "bwd_offmask",
                                   dtype=x.dtype, fixed_point=fixed_point and part[0])
                grid = (triton.cdiv(Ho * Wo, data_cfg["BLOCK_P"]) * G * N,)
                deform_conv2d_bwd_data_kernel[grid](
                    grad_out, x, offset if offset is not None else x, mask if mask is not None else x,
                    packed_weight(weight, groups, for_input_grad=True),
                    gx_buf if need_x else x, goff if need_off else x, gm if need_m else x, segs, start_og, scale,
                    H, W, Wo, Ho * Wo, K, Cin_g, Cout_g, G, *strides,
                    NEED_GX=part[0], NEED_GOFF=part[1], NEED_GMASK=part[2], FIXED_POINT=fixed_point, **consts,
                    **data_cfg, **_alignment(x, Cin_g, Cin // G, Cout_g, data_cfg),
                    HOIST_GO=Cin_g % (Cin // G) == 0 and Cout_g <= data_cfg["BLOCK_O"],
                )
            if need_x:
                # int64 -> float32 (half the buffer, the output itself for float32), divided in place
                gx = gx_buf.to(torch.float32).div_(scale) if fixed_point else gx_buf
                gx_buf = gx.to(x.dtype, memory_format=gx_format)
        if need_w:
            # split-K over (image, pixel) chunks: enough programs to fill the GPU, partials summed in order
            n_ob = triton.cdiv(Cout_g, cfg["BLOCK_O"])
            per_chunk = n_blocks * K * n_ob
            chunks, tiles_per_chunk = weight_chunks(N * triton.cdiv(Ho * Wo, cfg["BLOCK_P"]), per_chunk)
            partial = torch.empty((chunks, Cout, Cin_g, K), dtype=torch.float32, device=x.device)
            deform_conv2d_bwd_weight_kernel[(chunks * per_chunk,)](
                grad_out, x, offset if offset is not None else x, mask if mask is not None else x, partial, blocks,
                N, H, W, Wo, Ho * Wo, K, Cin_g, Cout_g, Cout, n_blocks, tiles_per_chunk, *strides,
                **consts, **cfg, **_alignment(x, Cin_g, Cin // G, Cout_g, cfg),
            )
            gw = partial.sum(0).view(weight.shape).to(weight.dtype)
    return gx_buf, goff, gw, gb, gm
