import itertools

import torch
import triton.language as tl

from deblurfast.bench.static import DIVISIBLE, EQUAL_TO_1
from deblurfast.kernels import deform_conv2d as dc

KERNELS = [dc.deform_conv2d_fwd_kernel, dc.deform_conv2d_bwd_data_kernel, dc.deform_conv2d_bwd_weight_kernel]

PTR = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}
PRECISION = {"fp32": "tf32x3", "fp16": "ieee", "bf16": "ieee"}
DOT = {"fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16}
TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sweep_specialization(pixel_major: bool) -> dict:
    """How a launch at the sweep (1x64x720x1280, 3x3, 64->64, one group; x gathered channels_last) specializes
    the kernels' integer arguments: grad_out/out, offset and mask NCHW (pixel_major) or channels_last."""
    if pixel_major:
        unit = ("s_ow", "s_mw", "s_gw", "s_yw", "N", "G", "groups")
        divisible = ("s_on", "s_oc", "s_oh", "s_mn", "s_mc", "s_mh", "s_gn", "s_gc", "s_gh", "s_yn", "s_yc")
    else:  # offset (18) and mask (9) channels innermost: their pixel strides are not multiples of 16
        unit = ("s_oc", "s_mc", "s_gc", "s_yc", "N", "G", "groups")
        divisible = ("s_on", "s_oh", "s_mn", "s_mh", "s_gn", "s_gh", "s_gw", "s_yn", "s_yw")
    return {EQUAL_TO_1: unit, DIVISIBLE: divisible + ("H", "W", "Wo", "HoWo", "Cin_g", "Cout_g", "Cout", "s_xn",
                                                      "s_xh", "s_xw")}


def cases():
    # (kernel, stride, padding, dilation, offset, mask, Cin_seg, Cout_g)
    geometries = [((3, 3), (1, 1), (1, 1), (1, 1), True, True, 64, 64),
                  ((5, 5), (1, 1), (2, 2), (1, 1), True, True, 128, 128),
                  ((3, 2), (2, 1), (1, 0), (2, 1), False, True, 3, 2),
                  ((3, 3), (1, 1), (1, 1), (1, 1), True, False, 16, 16)]
    for dtype, (k, st, pad, dil, has_off, has_mask, cseg, cout_g) in itertools.product(PTR, geometries):
        consts = dict(KW=k[1], SH=st[0], SW=st[1], PH=pad[0], PW=pad[1], DH=dil[0], DW=dil[1], HAS_OFFSET=has_off,
                      HAS_MASK=has_mask, PRECISION=PRECISION[dtype], DOT=DOT[dtype])
        p = PTR[dtype]
        ptrs = {"x": p, "offset": p, "mask": p, "weight": p, "bias": p, "out": p, "go": p,
                "segs": "*i32", "seg_start": "*i32", "seg_start_og": "*i32", "blocks": "*i32",
                "gx_scale": "*fp32", "goff": p, "gmask": p, "partial": "*fp32"}
        name = f"{dtype}-k{k[0]}x{k[1]}-off{int(has_off)}-mask{int(has_mask)}"
        # NCHW (pixel-major tiles) everywhere; channels_last too at the sweep's geometry
        for pixel_major in (True, False) if k == (3, 3) and has_mask and has_off else (True,):
            tag = "" if pixel_major else "-cl"

            def cfg(kernel, fixed=False):
                c = {**consts, "PIXEL_MAJOR": pixel_major,
                     **dc._config(cseg, cout_g, kernel, TORCH[dtype], fixed_point=fixed)}
                vec = 16 // TORCH[dtype].itemsize  # the sweep's strides are multiples of it where the channels are
                c["VEC"] = vec if cseg % vec == 0 and cout_g % vec == 0 else 1
                c["EVEN"] = cseg % c["BLOCK_C"] == 0 and cout_g % c["BLOCK_O"] == 0
                if kernel in ("bwd_data", "bwd_offmask"):  # one weight group per offset group in these cases
                    c["HOIST_GO"] = cout_g <= c["BLOCK_O"]
                if kernel != "fwd":  # grad_out contiguous, NCHW or channels_last
                    c["FLAT_GO"] = True
                if (k, cseg, cout_g) == ((3, 3), 64, 64):
                    c.update(sweep_specialization(pixel_major))
                return c
            # the kernels gather channels_last x in both layouts; the layout is grad_out's and the output's
            fwd = {**cfg("fwd"), "HAS_BIAS": True, "OUT_PIXEL_MAJOR": pixel_major}
            del fwd["PIXEL_MAJOR"]
            fwd["OUT_VEC"] = fwd["VEC"]  # and Ho*Wo = 720*1280
            yield f"dc_fwd-{name}{tag}", dc.deform_conv2d_fwd_kernel, ptrs, fwd
            # the input backward's two launches: the grad-input scatter, the offset and mask gradients
            for fixed in (False, True) if pixel_major else (False,):
                yield (f"dc_bwd_data-{name}-fixed{int(fixed)}{tag}", dc.deform_conv2d_bwd_data_kernel,
                       {**ptrs, "gx": "*i64" if fixed else "*fp32"},
                       {**cfg("bwd_data", fixed), "NEED_GX": True, "NEED_GOFF": False, "NEED_GMASK": False,
                        "FIXED_POINT": fixed})
            if has_off or has_mask:
                yield (f"dc_bwd_offmask-{name}{tag}", dc.deform_conv2d_bwd_data_kernel, {**ptrs, "gx": "*fp32"},
                       {**cfg("bwd_offmask"), "NEED_GX": False, "NEED_GOFF": has_off, "NEED_GMASK": has_mask,
                        "FIXED_POINT": False})
            yield f"dc_bwd_weight-{name}{tag}", dc.deform_conv2d_bwd_weight_kernel, ptrs, cfg("bwd_weight")
