import itertools

import triton.language as tl

from deblurfast.bench.compile_cases import DTYPES, PTR
from deblurfast.bench.static import DIVISIBLE, EQUAL_TO_1
from deblurfast.kernels import dynamic_filter2d as df
from deblurfast.kernels.padding import num_preimages

KERNELS = [df.dynamic_filter2d_fwd_kernel, df.dynamic_filter2d_fwd_rows_kernel, df.dynamic_filter2d_bwd_kernel_kernel,
           df.dynamic_filter2d_bwd_input_kernel]

ACC = {"fp32": tl.float32, "fp16": tl.float32, "bf16": tl.float32, "fp64": tl.float64}


def sweep_strides(channels_last: bool) -> dict:
    """The forward's integer arguments as a launch at the sweep shape (64 channels, 720x1280, one group;
    x, k and out in one layout) specializes them: unit strides as constants, the rest divisible by 16."""
    unit = ("s_xc", "s_kc", "s_oc") if channels_last else ("s_xw", "s_kw", "s_ow")
    ints = ("C", "H", "W", "Cg", "s_xn", "s_xc", "s_xh", "s_xw", "s_kn", "s_kc", "s_kh", "s_kw", "s_on", "s_oc",
            "s_oh", "s_ow")
    return {EQUAL_TO_1: unit, DIVISIBLE: tuple(n for n in ints if n not in unit)}


def cases():
    geometries = [(3, 1, 1, True), (5, 2, 2, False), (7, 1, 0, True), (1, 1, 1, False)]  # (k, dilation, mode, softmax)
    for dtype, (ks, dil, mode, softmax) in itertools.product(PTR, geometries):
        cfg = df._config(ks, 16, 128)
        pad = dil * (ks - 1) // 2
        base = {"KS": ks, "DIL": dil, "PAD": pad, "MODE": mode, "ACC": ACC[dtype], **cfg}
        p, acc = PTR[dtype], ("*fp64" if dtype == "fp64" else "*fp32")
        name = f"{dtype}-k{ks}-d{dil}-mode{mode}-softmax{int(softmax)}"
        fwd = {k: v for k, v in base.items() if k not in cfg}
        for cl in (False, True) if dtype == "fp16" else (False,):
            yield (f"df_fwd-{name}" + ("-cl" if cl else ""), df.dynamic_filter2d_fwd_kernel,
                   {"x": p, "k": p, "out": p},
                   {**fwd, **df._fwd_config(64, 1280, cl, ks, DTYPES[dtype]), "SOFTMAX": softmax,
                    **sweep_strides(cl)})
        if pad <= df._ROWS_MAX_PAD:
            rows = df.rows_config(df._fwd_config(64, 1280, False, ks, DTYPES[dtype]), DTYPES[dtype])
            yield (f"df_fwd_rows-{name}", df.dynamic_filter2d_fwd_rows_kernel, {"x": p, "k": p, "out": p},
                   {**fwd, **rows, "SOFTMAX": softmax, DIVISIBLE: sweep_strides(False)[DIVISIBLE]})
        yield (f"df_bwd_kernel-{name}", df.dynamic_filter2d_bwd_kernel_kernel,
               {"go": p, "x": p, "k": p, "grad_k": p, "probs": acc},
               {**base, "SOFTMAX": softmax, "NEED_GRAD_K": True, "STORE_PROBS": softmax,
                "num_warps": df._GRAD_KERNEL_WARPS})
        yield (f"df_bwd_input-{name}", df.dynamic_filter2d_bwd_input_kernel,
               {"go": p, "taps": acc if softmax else p, "grad_x": p},
               {**base, "N_PRE": num_preimages(mode, pad)})
