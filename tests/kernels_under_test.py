"""Compiles every Triton kernel of deblurfast.kernels for one GPU arch, without a GPU.

Usage: python kernels_under_test.py ARCH   (exit 0: all compiled; 1: failures; 3: unsupported here)
Run by test_triton_compile.py with TRITON_INTERPRET unset. The kernels and
their constants come from the modules in triton_compile_cases/.
"""

import importlib
import inspect
import pkgutil
import sys
import traceback

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import deblurfast.kernels
import triton_compile_cases


def all_kernels():
    """Every @triton.jit kernel (a function with a launch grid) defined in deblurfast.kernels."""
    found = []
    for info in pkgutil.iter_modules(deblurfast.kernels.__path__):
        module = importlib.import_module(f"deblurfast.kernels.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel") \
                    and inspect.getmodule(obj.fn) is module:
                found.append(obj)
    return found


def main(arch: int) -> int:
    target = GPUTarget("cuda", arch, 32)
    cases = []
    for info in pkgutil.iter_modules(triton_compile_cases.__path__):
        cases += list(importlib.import_module(f"triton_compile_cases.{info.name}").cases())
    covered = {id(c[1]) for c in cases}
    missing = [k.fn.__name__ for k in all_kernels() if id(k) not in covered]
    if missing:
        print("kernels without a compile case in tests/triton_compile_cases:", missing)
        return 1
    try:
        probe = cases[0][1]
        ASTSource(fn=probe, signature={p.name: "constexpr" for p in probe.params}, constexprs={})
    except TypeError as e:
        print(f"this triton's ASTSource takes other arguments: {e}")
        return 3
    failures = 0
    for name, fn, pointers, constexprs in cases:
        signature = {p.name: ("constexpr" if p.is_constexpr else pointers.get(p.name, "i32")) for p in fn.params}
        try:
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=dict(constexprs)),
                                      target=target)
            assert compiled.asm.get("cubin"), "no cubin"
        except Exception:
            failures += 1
            print(f"FAILED {name} sm_{arch}\n{traceback.format_exc()}")
    print(f"compiled {len(cases) - failures}/{len(cases)} kernels for sm_{arch}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
