"""Compiles every Triton kernel of deblurfast.kernels for one GPU arch, without a GPU.

Usage: python kernels_under_test.py ARCH   (exit 0: all compiled; 1: failures; 3: unsupported here)
Run by test_triton_compile.py with TRITON_INTERPRET unset.
"""

import itertools
import sys
import traceback

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from deblurfast.kernels import dynamic_filter2d as df
from deblurfast.kernels.padding import num_preimages

KERNELS = [df.dynamic_filter2d_fwd_kernel, df.dynamic_filter2d_bwd_kernel_kernel, df.dynamic_filter2d_bwd_input_kernel]

_PTR = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16", "fp64": "*fp64"}
_ACC = {"fp32": tl.float32, "fp16": tl.float32, "bf16": tl.float32, "fp64": tl.float64}


def cases():
    """(name, kernel, pointer types, constexprs) spanning every constexpr branch."""
    geometries = [(3, 1, 1, True), (5, 2, 2, False), (7, 1, 0, True), (1, 1, 1, False)]
    for dtype, (ks, dil, mode, softmax) in itertools.product(_PTR, geometries):
        cfg = {k: v for k, v in df._config(ks, 16, 128).items() if k != "num_warps"}
        pad = dil * (ks - 1) // 2
        base = {"KS": ks, "DIL": dil, "PAD": pad, "MODE": mode, "ACC": _ACC[dtype], **cfg}
        p, acc = _PTR[dtype], ("*fp64" if dtype == "fp64" else "*fp32")
        name = f"{dtype}-k{ks}-d{dil}-mode{mode}-softmax{int(softmax)}"
        yield (f"df_fwd-{name}", df.dynamic_filter2d_fwd_kernel, {"x": p, "k": p, "out": p},
               {**base, "SOFTMAX": softmax})
        yield (f"df_bwd_kernel-{name}", df.dynamic_filter2d_bwd_kernel_kernel,
               {"go": p, "x": p, "k": p, "grad_k": p, "probs": acc},
               {**base, "SOFTMAX": softmax, "NEED_GRAD_K": True, "STORE_PROBS": softmax})
        yield (f"df_bwd_input-{name}", df.dynamic_filter2d_bwd_input_kernel,
               {"go": p, "taps": acc if softmax else p, "grad_x": p},
               {**base, "N_PRE": num_preimages(mode, pad)})


def compile_case(fn, pointers, constexprs, target):
    signature = {p.name: ("constexpr" if p.is_constexpr else pointers.get(p.name, "i32")) for p in fn.params}
    src = ASTSource(fn=fn, signature=signature, constexprs=dict(constexprs))
    return triton.compile(src, target=target)


def main(arch: int) -> int:
    target = GPUTarget("cuda", arch, 32)
    all_cases = list(cases())
    missing = [k.__name__ for k in KERNELS if k not in {c[1] for c in all_cases}]
    if missing:
        print("kernels without a compile case:", missing)
        return 1
    try:
        ASTSource(fn=KERNELS[0], signature={p.name: "constexpr" for p in KERNELS[0].params}, constexprs={})
    except TypeError as e:
        print(f"this triton's ASTSource takes other arguments: {e}")
        return 3
    failures = 0
    for name, fn, pointers, constexprs in all_cases:
        try:
            compiled = compile_case(fn, pointers, constexprs, target)
            assert compiled.asm.get("cubin"), "no cubin"
        except Exception:
            failures += 1
            print(f"FAILED {name} sm_{arch}\n{traceback.format_exc()}")
    print(f"compiled {len(all_cases) - failures}/{len(all_cases)} kernels for sm_{arch}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
