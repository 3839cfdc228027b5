import itertools

from deblurfast.bench.compile_cases import DTYPES, PTR
from deblurfast.bench.static import DIVISIBLE
from deblurfast.kernels import strip_pool as sp
from deblurfast.kernels._triton_common import tl_acc, tl_dot

KERNELS = [
    sp.strip_reduce_kernel,
    sp.strip_reduce_finish_kernel,
    sp.strip_spread_kernel,
    sp.blur_aware_mask_fwd_kernel,
    sp.blur_aware_mask_bwd_kernel,
    sp.blur_aware_mask_cols_finish_kernel,
    sp.blur_aware_mask_rows_finish_kernel,
]



def cases():
    for name, mode in itertools.product(PTR, (sp.MODE_ADAPTIVE, sp.MODE_INDEX)):
        dtype, p = DTYPES[name], PTR[name]
        acc = "*fp64" if name == "fp64" else "*fp32"
        base = {"MODE": mode, "ACC": tl_acc(dtype), "KVP": 16, "KHP": 16, "BLOCK_H": 32, "BLOCK_W": sp._MAX_BLOCK_W,
                "NONFINITE": True}
        tag = f"{name}-mode{mode}"
        reduce_case = (f"strip_reduce-{tag}", sp.strip_reduce_kernel,
                       {"x": p, "ws": acc, "h_out": p, "idx_w": "*i32", "idx_h": "*i32"},
                       {**base, "DOT": tl_dot(dtype),
                        **dict(zip(("BLOCK_W", "num_warps"), sp._reduce_tiles(1280, dtype))),
                        DIVISIBLE: ("H", "W", "KV", "KH", "h_stride")})
        spread_case = (f"strip_spread-{tag}", sp.strip_spread_kernel,
                       {"v": p, "h": p, "out": p, "idx_w": "*i32", "idx_h": "*i32"},
                       {**base, "DOT": tl_dot(dtype), "num_warps": sp._SPREAD_WARPS,
                        DIVISIBLE: ("H", "W", "KV", "KH", "v_stride", "h_stride")})
        for case in (reduce_case, spread_case):
            yield case
            if name == "fp16":  # the sweep's, without the non-finite branch: the instructions finite data run
                yield case[0] + "-finite", case[1], case[2], {**case[3], "NONFINITE": False}
        if mode == sp.MODE_ADAPTIVE:
            yield (f"strip_reduce_finish-{name}", sp.strip_reduce_finish_kernel, {"ws": acc, "v_out": p},
                   {"ACC": tl_acc(dtype), "KVP": 16, "BLOCK_H": 64, DIVISIBLE: ("H", "KV", "v_stride")})
    # BANet (F = 64, C = 128) and BANet+ (F = 192, C = 192) tiles
    for name, (F, C) in itertools.product(PTR, ((64, 128), (192, 192))):
        dtype, p = DTYPES[name], PTR[name]
        acc = "*fp64" if name == "fp64" else "*fp32"
        cfg = sp._mask_config(F, C, dtype)
        base = {"DOT": tl_dot(dtype), "ACC": tl_acc(dtype), **cfg, DIVISIBLE: ("C", "F", "H", "W")}
        tensors = {"x": p, "rows": p, "cols": p, "col_index": "*i32", "row_index": "*i32", "weight": p, "bias": p}
        for has_bias in (True, False):
            yield (f"blur_aware_mask_fwd-{name}-F{F}-bias{int(has_bias)}", sp.blur_aware_mask_fwd_kernel,
                   {**tensors, "out": p}, {**base, "HAS_BIAS": has_bias})
        outs = {"go": p, "row_order": "*i32", "tile_entries": "*i32", "grad_x": p, "part_rows": acc,
                "part_cols": acc, "part_w": acc, "part_b": acc}
        for need in ((True, True, True, True), (True, False, False, False), (False, False, False, True)):
            flags = dict(zip(("NEED_X", "NEED_W", "NEED_B", "NEED_T"), need))
            yield (f"blur_aware_mask_bwd-{name}-F{F}-need{''.join(str(int(n)) for n in need)}",
                   sp.blur_aware_mask_bwd_kernel, {**tensors, **outs},
                   {**base, **sp._mask_bwd_config(F, dtype), "HAS_BIAS": True, **flags})
        yield (f"blur_aware_mask_cols_finish-{name}-F{F}", sp.blur_aware_mask_cols_finish_kernel,
               {"part_cols": acc, "grad_cols": p, "starts": "*i32", "counts": "*i32"},
               {"ACC": tl_acc(dtype), **sp._mask_finish_config(F), DIVISIBLE: ("F", "W")})
        fin = sp._mask_finish_config(F)
        yield (f"blur_aware_mask_rows_finish-{name}-F{F}", sp.blur_aware_mask_rows_finish_kernel,
               {"part_rows": acc, "grad_rows": p, "tile_entries": "*i32"},
               {"ACC": tl_acc(dtype), "FP": fin["FP"], "BLOCK_R": fin["BLOCK_W"], "num_warps": fin["num_warps"],
                DIVISIBLE: ("F", "H")})
