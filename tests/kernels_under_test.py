"""Compiles every Triton kernel of deblurfast.kernels for one GPU arch, without a GPU,
and holds each configuration's shared memory against that arch's per-block limit.

Usage: python kernels_under_test.py ARCH   (exit 0: all compiled and fit; 1: failures; 3: unsupported here)
Run by test_triton_compile.py with TRITON_INTERPRET unset. The kernels and their
constants come from deblurfast.bench.compile_cases. Prints one line per
configuration: registers, stack (spill) bytes and shared memory, read from the
cubin (deblurfast.bench.static).
"""

import importlib
import inspect
import pkgutil
import sys
import traceback

import triton
from triton.compiler import ASTSource

import deblurfast.kernels
from deblurfast.bench import static


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
    target = static.arch(f"sm_{arch}")
    cases = static.triton_cases()
    covered = {id(c[1]) for c in cases}
    missing = [k.fn.__name__ for k in all_kernels() if id(k) not in covered]
    if missing:
        print("kernels without a compile case in deblurfast/bench/compile_cases:", missing)
        return 1
    try:
        probe = cases[0][1]
        ASTSource(fn=probe, signature={p.name: "constexpr" for p in probe.params}, constexprs={})
    except TypeError as e:
        print(f"this triton's ASTSource takes other arguments: {e}")
        return 3
    failures, spilling = 0, 0
    print(f"{'configuration':<58} {'warps':>5} {'regs':>4} {'stack':>6} {'shared':>7}  (sm_{arch}, "
          f"shared limit {target.shared_per_block} B per block)")
    for case in cases:
        try:
            row = static.triton_resources(case, target)[0]
        except Exception:
            failures += 1
            print(f"FAILED {case[0]} sm_{arch}\n{traceback.format_exc()}")
            continue
        over = row["shared"] > target.shared_per_block
        failures += over
        spilling += row["stack"] > 0
        print(f"{case[0]:<58} {row['num_warps']:>5} {row['registers']:>4} {row['stack']:>6} {row['shared']:>7}"
              + ("  OVER THE SHARED-MEMORY LIMIT" if over else ""))
    print(f"{spilling} of {len(cases)} configurations have a stack frame (spills)")
    print(f"compiled {len(cases) - failures}/{len(cases)} kernels for sm_{arch} within its limits")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
