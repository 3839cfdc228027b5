"""Static kernel report: what the compiler says about each kernel, without a GPU.

Every Triton compile case (deblurfast.bench.compile_cases) is compiled for an
sm_80/sm_90 target and its cubin read with cuobjdump (registers, stack, SASS);
the CUDA kernels (csrc/cuda/*_kernel.cu) are compiled with nvcc -cubin and read
the same way. From those numbers come the occupancy per SM and, in
deblurfast.bench.static_model, an estimated time at the sweep shapes.
`deblurfast bench --static --arch sm_90` writes it all to bench/results/static-sm90/.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter


@dataclasses.dataclass(frozen=True)
class Arch:
    """Per-SM and per-block limits of one architecture (CUDA C Programming Guide,
    "Compute Capabilities" table) and, for sm_90, the H100 SXM clocks and SM count."""
    name: str
    capability: int
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    register_unit_per_warp: int = 256  # registers are allocated to a warp in units of 256
    max_warps_per_sm: int = 64
    max_ctas_per_sm: int = 32
    shared_per_sm: int = 233472  # 228 KB
    shared_per_block: int = 232448  # 227 KB, the opt-in maximum of one block
    shared_reserved_per_cta: int = 1024  # the system's 1 KB per resident block
    sms: int = 132
    clock_hz: float = 1.755e9
    schedulers_per_sm: int = 4  # one warp instruction issued per scheduler per clock


ARCHS = {
    "sm_90": Arch("sm_90", 90),
    "sm_80": Arch("sm_80", 80, shared_per_sm=167936, shared_per_block=166912, sms=108, clock_hz=1.41e9),
}


def arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {name!r}")
    return ARCHS[name]


# -- tools ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def cuobjdump() -> str:
    """The cuobjdump that ships inside triton (or the CUDA toolkit's)."""
    try:
        import triton

        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("cuobjdump") or os.path.join(cuda_home() or "/usr/local/cuda", "bin", "cuobjdump")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError("cuobjdump: not in triton's backends/nvidia/bin, on PATH or in CUDA_HOME/bin")
    return path


def cuda_home() -> str | None:
    """The real CUDA toolkit folder (the nvcc on PATH may be a wrapper script)."""
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda-13.0", "/usr/local/cuda"):
        if candidate and os.access(os.path.join(candidate, "bin", "nvcc"), os.X_OK) \
                and os.path.isdir(os.path.join(candidate, "include")):
            return candidate
    return None


def read_cubin(cubin: bytes, sass: bool = True) -> tuple[str, str]:
    """cuobjdump's (-res-usage, -sass) text of a cubin; without `sass`, "" for the SASS (the
    disassembly is most of the reading time)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        usage = subprocess.run([cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        code = subprocess.run([cuobjdump(), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout if sass else ""
    finally:
        os.remove(f.name)
    return usage, code


# -- parsers -------------------------------------------------------------------------------------------

_USAGE_FUNCTION = re.compile(r"^\s*Function\s+(\S+):\s*$")
_USAGE_FIELD = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """cuobjdump -res-usage text -> {function: {"registers", "stack", "static_shared", "local"}}."""
    out, name = {}, None
    keys = {"REG": "registers", "STACK": "stack", "SHARED": "static_shared", "LOCAL": "local"}
    for line in text.splitlines():
        m = _USAGE_FUNCTION.match(line)
        if m:
            name = m.group(1)
            continue
        fields = _USAGE_FIELD.findall(line)
        if name and fields:
            out[name] = {keys[k]: int(v) for k, v in fields}
            name = None
    return out


_SASS_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)\s*$")
_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Za-z0-9_.]*)")
_TENSOR_CORE = ("HMMA", "HGMMA", "IMMA", "IGMMA", "DMMA", "BMMA", "QGMMA")


def _width(parts: list[str]) -> int:
    """Bits per thread of a memory instruction from its modifiers (LDG.E.128, STG.E.U16, RED.E.ADD.F64 ...)."""
    for bits in ("128", "64"):
        if bits in parts or f"F{bits}" in parts or f"U{bits}" in parts or f"S{bits}" in parts:
            return int(bits)
    for part in parts:  # vector atomics: REDG.E.ADD.F32x4 (sm_90) is 4 x 32 bits
        if re.fullmatch(r"F32x[24]", part):
            return 32 * int(part[-1])
    if {"U16", "S16", "F16", "BF16"} & set(parts):
        return 16
    if {"U8", "S8"} & set(parts):
        return 8
    return 32  # the default of LDG/STG/RED, and F16x2 / BF16x2 packed atomics


def classify(opcode: str) -> str | None:
    """The SASS opcode's counter in sass_stats (or None for the rest)."""
    parts = opcode.split(".")
    op = parts[0]
    if op in ("LDG", "LDGSTS", "UTMALDG"):
        return f"ld.global.{_width(parts[1:])}" if op != "UTMALDG" else "ld.global.tma"
    if op in ("STG", "UTMASTG"):
        return f"st.global.{_width(parts[1:])}" if op == "STG" else "st.global.tma"
    if op in ("RED", "ATOMG", "REDG"):
        return f"atom.global.{_width(parts[1:])}"
    if op in ("LDL", "STL"):
        return f"{op.lower()[:2]}.local"
    if op in ("LD", "ST", "ATOM"):
        return f"{op.lower()}.generic"
    if op in _TENSOR_CORE:
        return f"tensor.{op}"
    return None


_BRANCH_TARGET = re.compile(r"\bBRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)")


def sass_stats(text: str) -> dict[str, dict]:
    """cuobjdump -sass text -> {function: {"instructions": static count, "ops": Counter of classify(),
    "loop_instructions", "loop_memory": the same counts over its hot loop, "loop_nest": the hot loop's
    instructions by nesting depth, each loop's own (not its inner loops'), summed over the loops at a depth}}.
    Counts are of instructions in the code, not of instructions executed: a loop body counts once. The hot
    loop is the span of a backward branch holding the most global memory instructions (the smallest such
    span; none: the whole function), which is where a kernel that walks its tiles spends its issue slots;
    with the number of times each depth's body runs, loop_nest gives the instructions executed."""
    out, name, code = {}, None, {}
    for line in text.splitlines():
        m = _SASS_FUNCTION.match(line)
        if m:
            name = m.group(1)
            out[name] = {"instructions": 0, "ops": Counter()}
            code[name] = []
            continue
        m = _SASS_INSTRUCTION.match(line)
        if name and m:
            opcode = m.group(1)
            if opcode in ("NOP",):
                continue
            out[name]["instructions"] += 1
            kind = classify(opcode)
            if kind:
                out[name]["ops"][kind] += 1
            target = _BRANCH_TARGET.search(line) if opcode.startswith("BRA") else None
            address = int(line.split("*/", 1)[0].strip().lstrip("/*"), 16)
            code[name].append((address, kind or "", int(target.group(1), 16) if target else None))
    # ptxas pads the end of a function with BRA-to-self + NOPs; the self-branch is not work either
    for fn, stats in out.items():
        stats["instructions"] = max(0, stats["instructions"] - 1)
        stats["loop_instructions"], stats["loop_memory"] = stats["instructions"], _global_memory(stats["ops"])
        loops = {}  # loop head -> its last backward branch: the loop's span
        for address, _, target in code[fn]:
            if target is not None and target < address:
                loops[target] = max(address, loops.get(target, address))
        best = None
        for head, end in loops.items():
            body = [k for a, k, _ in code[fn] if head <= a <= end]
            memory = sum(_is_global(k) for k in body)
            if memory and (best is None or (memory, -len(body)) > (best[1], -best[0])):
                best = (len(body), memory, head, end)
        stats["loop_nest"] = [stats["instructions"]]
        if best:
            stats["loop_instructions"], stats["loop_memory"] = best[:2]
            stats["loop_nest"] = _loop_nest(code[fn], loops, best[2], best[3])
    return out


def _loop_nest(code: list, loops: dict, head: int, end: int) -> list[int]:
    """Instructions of the loop [head, end] and of the loops inside it by depth, each address counted at
    the depth of the innermost loop that holds it."""
    spans = [(h, e) for h, e in loops.items() if head <= h and e <= end]
    nest = []
    for address, _, _ in code:
        if head <= address <= end:
            depth = sum(h <= address <= e for h, e in spans) - 1
            nest += [0] * (depth + 1 - len(nest))
            nest[depth] += 1
    return nest


def _is_global(kind: str) -> bool:
    """Whether a classify() counter is a global memory instruction (ld/st/atom.global.*)."""
    return kind.split(".")[1:2] == ["global"]


def _global_memory(ops: Counter) -> int:
    return sum(v for k, v in ops.items() if _is_global(k))


_BLOCKED = re.compile(r"^#(\w+)\s*=\s*#ttg\.blocked<\{sizePerThread\s*=\s*\[([\d, ]+)\],\s*threadsPerWarp\s*=\s*"
                      r"\[([\d, ]+)\],\s*warpsPerCTA\s*=\s*\[([\d, ]+)\],\s*order\s*=\s*\[([\d, ]+)\]", re.M)


def blocked_layouts(ttgir: str) -> dict[str, dict]:
    """The #blocked layouts of a TTGIR module: name -> sizePerThread, threadsPerWarp, warpsPerCTA, order."""
    def ints(s):
        return [int(v) for v in s.split(",")]
    return {m.group(1): {"sizePerThread": ints(m.group(2)), "threadsPerWarp": ints(m.group(3)),
                         "warpsPerCTA": ints(m.group(4)), "order": ints(m.group(5))}
            for m in _BLOCKED.finditer(ttgir)}


def lane_axis(layout: dict) -> int:
    """The tile axis along which a warp's consecutive lanes lie (the fastest axis with > 1 lane)."""
    for axis in layout["order"]:
        if layout["threadsPerWarp"][axis] > 1:
            return axis
    return layout["order"][0]


_ACCESS = re.compile(r"(tt\.load|tt\.store|tt\.atomic_rmw|ttg\.async_copy_global_to_local)\b[^\n]*?"
                     r"tensor<([\dx]+)x!tt\.ptr<(\w+)>,\s*#(\w+)>")
_OP = {"ttg.async_copy_global_to_local": "tt.load"}  # a pipelined load (cp.async into shared memory) is a load


def accesses(ttgir: str) -> list[dict]:
    """Each global tensor access of a TTGIR module: op, tile shape, element type, and the tile axis
    its warp lanes lie on (None where the layout is not a #blocked one)."""
    layouts = blocked_layouts(ttgir)
    return [{"op": _OP.get(m.group(1), m.group(1)), "shape": [int(v) for v in m.group(2).split("x")],
             "type": m.group(3), "lane_axis": lane_axis(layouts[m.group(4)]) if m.group(4) in layouts else None}
            for m in _ACCESS.finditer(ttgir)]


# -- occupancy -----------------------------------------------------------------------------------------


def occupancy(registers: int, shared: int, warps: int, target: Arch) -> dict:
    """Resident CTAs and warps per SM, and what limits them, for one kernel configuration."""
    regs_per_warp = -(-max(registers, 1) * 32 // target.register_unit_per_warp) * target.register_unit_per_warp
    limits = {
        "warps": target.max_warps_per_sm // warps,
        "registers": target.registers_per_sm // (regs_per_warp * warps),
        "shared": target.shared_per_sm // (shared + target.shared_reserved_per_cta),
        "ctas": target.max_ctas_per_sm,
    }
    ctas = min(limits.values())
    return {"ctas_per_sm": ctas, "warps_per_sm": ctas * warps,
            "occupancy": ctas * warps / target.max_warps_per_sm,
            "limited_by": min(limits, key=lambda k: (limits[k], k != "registers"))}


# -- Triton ---------------------------------------------------------------------------------------------


def triton_cases() -> list[tuple]:
    """Every (name, kernel, pointer types, constexprs) compile case."""
    import importlib
    import pkgutil

    from . import compile_cases

    cases = []
    for info in pkgutil.iter_modules(compile_cases.__path__):
        cases += list(importlib.import_module(f"{compile_cases.__name__}.{info.name}").cases())
    return cases


LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg")  # launch options a case may carry among its constexprs
# integer arguments a launch at the sweep shapes passes as multiples of 16 (1280, 720, 16 bins, their strides):
# triton specializes such an argument as divisible by 16, as it does a 16-byte aligned pointer
DIVISIBLE = "divisible_by_16"
EQUAL_TO_1 = "equal_to_1"  # and those it passes as 1 (a unit stride): triton compiles such an argument as the constant


def compile_triton(case: tuple, target: Arch):
    """triton.compile of one case for the target (cached by triton). Must run without TRITON_INTERPRET."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _, fn, pointers, constexprs = case
    options = {k: v for k, v in constexprs.items() if k in LAUNCH_OPTIONS}
    params = {p.name for p in fn.params}  # a case may name the arguments of several kernels
    divisible = set(constexprs.get(DIVISIBLE, ())) & params
    ones = {name: 1 for name in constexprs.get(EQUAL_TO_1, ()) if name in params}
    constexprs = {**{k: v for k, v in constexprs.items() if k not in LAUNCH_OPTIONS + (DIVISIBLE, EQUAL_TO_1)}, **ones}
    signature = {p.name: ("constexpr" if p.is_constexpr or p.name in ones else pointers.get(p.name, "i32"))
                 for p in fn.params}
    # a launch specializes every pointer whose address is a multiple of 16 B (every fresh torch tensor) as
    # such, which lets the compiler vectorize along a contiguous axis; the compile does the same
    attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
             if signature[p.name].startswith("*") or p.name in divisible}
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", target.capability, 32), options=options)


def triton_resources(case: tuple, target: Arch, sass: bool = False) -> tuple[dict, object, str]:
    """One compile case compiled for the target: ({"num_warps", "registers", "stack", "local",
    "shared"}, the compiled kernel, its SASS if asked for, else "")."""
    compiled = compile_triton(case, target)
    usage, code = read_cubin(compiled.asm["cubin"], sass=sass)
    res = parse_resource_usage(usage)[case[1].fn.__name__]
    return ({"num_warps": compiled.metadata.num_warps, "registers": res["registers"], "stack": res["stack"],
             "local": res["local"], "shared": compiled.metadata.shared + res["static_shared"]}, compiled, code)


def triton_row(case: tuple, target: Arch) -> dict:
    """The report's row of one compile case: resources, occupancy, memory and tensor-core instructions."""
    res, compiled, sass = triton_resources(case, target, sass=True)
    kernel = case[1].fn.__name__
    stats = sass_stats(sass)[kernel]
    return {
        "source": "triton", "arch": target.name, "case": case[0], "kernel": kernel, **res,
        **occupancy(res["registers"], res["shared"], res["num_warps"], target),
        "sass_instructions": stats["instructions"], "loop_instructions": stats["loop_instructions"],
        "loop_memory": stats["loop_memory"], "loop_nest": stats["loop_nest"],
        **{k: v for k, v in sorted(stats["ops"].items())},
        "constexprs": {k: v for k, v in case[3].items() if isinstance(v, (int, str))},
        "accesses": accesses(compiled.asm["ttgir"]),
    }


# -- CUDA ------------------------------------------------------------------------------------------------


def cuda_sources(repo: str) -> list[str]:
    folder = os.path.join(repo, "csrc", "cuda")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith("_kernel.cu"))


def compile_cuda(source: str, target: Arch, cache_dir: str) -> bytes:
    """nvcc -cubin of one csrc/cuda/*_kernel.cu for the target, cached by the source files' contents."""
    import hashlib

    home = cuda_home()
    if home is None:
        raise FileNotFoundError("nvcc: no CUDA toolkit found (set CUDA_HOME)")
    csrc = os.path.dirname(os.path.dirname(source))
    digest = hashlib.sha256(target.name.encode())
    for root, _, files in sorted(os.walk(csrc)):
        for f in sorted(files):
            if f.endswith((".cu", ".cuh", ".h")):
                with open(os.path.join(root, f), "rb") as fh:
                    digest.update(f.encode() + fh.read())
    path = os.path.join(cache_dir, f"{os.path.basename(source)[:-3]}-{target.name}-{digest.hexdigest()[:16]}.cubin")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp"
        subprocess.run([os.path.join(home, "bin", "nvcc"), "-cubin", f"-arch={target.name}", "-O3", "-std=c++17",
                        f"-I{csrc}", "-o", tmp, source], check=True, capture_output=True, text=True)
        os.replace(tmp, path)
    with open(path, "rb") as f:
        return f.read()


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> readable names (c++filt, or the names unchanged), the grid-stride launcher's
    functor shown alone: `deform_conv2d::WeightGrad<__half, false>`."""
    tool = os.path.join(cuda_home() or "", "bin", "cu++filt")
    tool = tool if os.access(tool, os.X_OK) else shutil.which("c++filt")
    if tool is None or not names:
        return {n: n for n in names}
    readable = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    if len(readable) != len(names):
        return {n: n for n in names}
    out = {}
    for name, text in zip(names, readable):
        m = re.match(r"void deblurfast::cuda::grid_stride_kernel<(.*)>\(.*\)$", text)
        out[name] = (m.group(1) if m else text).replace("deblurfast::cuda::", "").strip()
    return out


def cuda_rows(cubin: bytes, source: str, target: Arch, threads_per_block: int = 256) -> list[dict]:
    """One row per kernel function of a CUDA cubin (block size as launched by csrc/cuda/grid.cuh)."""
    usage, sass = read_cubin(cubin)
    res, stats = parse_resource_usage(usage), sass_stats(sass)
    names = demangle(sorted(res))
    warps = threads_per_block // 32
    rows = []
    for fn in sorted(res):
        r, s = res[fn], stats.get(fn, {"instructions": 0, "ops": Counter()})
        rows.append({
            "source": "cuda", "arch": target.name, "case": os.path.basename(source), "kernel": names[fn],
            "num_warps": warps, "registers": r["registers"], "stack": r["stack"], "local": r["local"],
            "shared": r["static_shared"], **occupancy(r["registers"], r["static_shared"], warps, target),
            "sass_instructions": s["instructions"], **{k: v for k, v in sorted(s["ops"].items())},
        })
    return rows


# -- the report --------------------------------------------------------------------------------------------

TRITON_COLUMNS = [("configuration", "case", ""), ("warps", "num_warps", "d"), ("regs", "registers", "d"),
                  ("stack B", "stack", "d"), ("shared B", "shared", "d"), ("CTAs/SM", "ctas_per_sm", "d"),
                  ("warps/SM", "warps_per_sm", "d"), ("limited by", "limited_by", ""),
                  ("SASS", "sass_instructions", "d"), ("global ld", "loads", ""), ("global st", "stores", ""),
                  ("atomics", "atomics", ""), ("tensor core", "tensor", ""), ("lanes on axis", "lanes", "")]
CUDA_COLUMNS = [("kernel", "kernel", ""), ("file", "case", "")] + TRITON_COLUMNS[1:-1]
ESTIMATE_COLUMNS = [("op", "op", ""), ("layout", "layout", ""), ("shape", "shape", ""),
                    ("bytes_min MB", "bytes_min_mb", ".0f"), ("bytes moved MB", "bytes_moved_mb", ".0f"),
                    ("floor ms", "floor_ms", ".3f"), ("estimate ms", "estimate_ms", ".3f"),
                    ("% of roofline", "pct_roofline", ".1f"), ("bound by", "bound", "")]


def _by_width(row: dict, prefix: str) -> str:
    parts = [f"{v}x{k[len(prefix):]}" for k, v in row.items() if k.startswith(prefix)]
    return " ".join(sorted(parts)) or "-"


def _display(row: dict) -> dict:
    """Columns of the markdown tables: the memory counters grouped by kind as count x bits."""
    out = dict(row)
    out["loads"] = _by_width(row, "ld.global.")
    out["stores"] = _by_width(row, "st.global.")
    out["atomics"] = _by_width(row, "atom.global.")
    out["tensor"] = _by_width(row, "tensor.")
    out["lanes"] = " ".join(sorted({f"{'x'.join(map(str, a['shape']))}:{a['lane_axis']}"
                                    for a in row.get("accesses", [])})) or "-"
    return out


def report(target: Arch, out_dir: str | None, with_cuda: bool = True, repo: str | None = None,
           only: list[str] | None = None, log=print) -> dict:
    """Compiles and reads every Triton case (and the CUDA kernels), estimates the sweep shapes, and
    writes triton-<arch>.jsonl, cuda-<arch>.jsonl, estimates-<arch>.jsonl and README.md to out_dir."""
    from . import static_model
    from .core import markdown_table
    from .._files import write_text
    import json

    triton_rows = []
    cases = [c for c in triton_cases() if not only or any(part in c[0] for part in only)]
    for i, case in enumerate(cases):
        try:
            triton_rows.append(triton_row(case, target))
        except Exception as e:  # a failed compile is a row of the report, not the end of it
            triton_rows.append({"source": "triton", "arch": target.name, "case": case[0],
                                "kernel": case[1].fn.__name__, "error": f"{type(e).__name__}: {e}"[:300]})
        log(f"[{i + 1}/{len(cases)}] {case[0]}")
    cuda = []
    if with_cuda:
        repo = repo or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cache = os.path.join(os.path.expanduser("~"), ".cache", "deblurfast", "cubins")
        for source in cuda_sources(repo):
            log(f"nvcc -cubin {os.path.relpath(source, repo)} for {target.name} (cached after the first run)")
            cuda += cuda_rows(compile_cuda(source, target, cache), source, target)
    ok = {r["case"]: r for r in triton_rows if "error" not in r}
    estimates = static_model.estimates(ok, target) if target.name == "sm_90" else []
    for e in estimates:
        e["bytes_min_mb"], e["bytes_moved_mb"] = e["bytes_min"] / 1e6, e["bytes_moved"] / 1e6
    summary = {"triton": triton_rows, "cuda": cuda, "estimates": estimates}
    if out_dir:
        for name, rows in summary.items():
            lines = "".join(json.dumps(r) + "\n" for r in rows)
            write_text(os.path.join(out_dir, f"{name}-{target.name}.jsonl"), lines)
        write_text(os.path.join(out_dir, "README.md"), readme(summary, target, markdown_table))
    return summary


def readme(summary: dict, target: Arch, markdown_table) -> str:
    from . import static_model

    triton_rows = [_display(r) for r in summary["triton"] if "error" not in r]
    failed = [r for r in summary["triton"] if "error" in r]
    spilling = [r for r in triton_rows if r["stack"] > 0]
    cuda_spilling = [r for r in summary["cuda"] if r["stack"] > 0]
    lines = [
        f"# Static kernel report, {target.name} (*static estimate, not measured*)",
        "",
        "Generated by `deblurfast bench --static --arch " + target.name + "` from the compiler's output, without a "
        "GPU: the Triton compile cases (deblurfast/bench/compile_cases) compiled by triton, the CUDA kernels "
        "(csrc/cuda/*_kernel.cu) by nvcc -cubin, both read with cuobjdump (-res-usage, -sass) and the TTGIR. "
        "Nothing here is a measurement; a GPU run puts measured times beside the estimates.",
        "",
        f"Limits used ({target.name}): {target.registers_per_sm} registers per SM allocated per warp in units of "
        f"{target.register_unit_per_warp}, at most {target.max_registers_per_thread} per thread; "
        f"{target.max_warps_per_sm} warps and {target.max_ctas_per_sm} CTAs per SM; {target.shared_per_sm} B shared "
        f"memory per SM, {target.shared_per_block} B per block, {target.shared_reserved_per_cta} B reserved per CTA; "
        f"{target.sms} SMs at {target.clock_hz / 1e9:.3f} GHz, {target.schedulers_per_sm} schedulers per SM.",
        "",
        f"- Triton: {len(triton_rows)} configurations compiled, {len(failed)} failed; {len(spilling)} have a stack "
        f"frame (spills), the largest {max((r['stack'] for r in spilling), default=0)} B per thread.",
        f"- CUDA: {len(summary['cuda'])} kernel functions, {len(cuda_spilling)} with a stack frame.",
        "- Instruction counts are static (in the code; a loop body counts once). Memory instructions are counted by "
        "bits per thread (16x32: sixteen 32-bit loads). `lanes on axis`: tile shape : the tile axis a warp's "
        "lanes lie along, for each global access in the TTGIR.",
        "",
    ]
    if summary["estimates"]:
        lines += ["## Estimates at the sweep shapes (H100 SXM)", "", static_model.__doc__.split("\n\n", 1)[1].strip(),
                  "", markdown_table(summary["estimates"], ESTIMATE_COLUMNS), "",
                  "Per kernel (ms): " + "; ".join(
                      f"{e['op']} {e['layout']}: " + ", ".join(
                          f"{k['kernel']} lsu {k['lsu_ms']:.3f} issue {k['issue_ms']:.3f} tensor {k['tensor_ms']:.3f}"
                          for k in e["kernels"]) for e in summary["estimates"]), ""]
    lines += ["## Triton configurations", "", markdown_table(triton_rows, TRITON_COLUMNS), ""]
    if failed:
        lines += ["Failed: " + "; ".join(f"{r['case']}: {r['error']}" for r in failed), ""]
    if summary["cuda"]:
        lines += ["## CUDA kernels", "", markdown_table([_display(r) for r in summary["cuda"]], CUDA_COLUMNS), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="static kernel report (run by `deblurfast bench --static`)")
    p.add_argument("--arch", default="sm_90", choices=sorted(ARCHS))
    p.add_argument("--out", help="folder for the jsonl files and README.md")
    p.add_argument("--no-cuda", action="store_true", help="skip the nvcc compile of csrc/cuda")
    p.add_argument("--only", action="append", help="only the Triton cases whose name contains this (repeatable; "
                   "estimates only for the ops all of whose kernels are among them)")
    args = p.parse_args(argv)
    summary = report(arch(args.arch), args.out, with_cuda=not args.no_cuda, only=args.only,
                     log=lambda s: print(s, flush=True))
    for e in summary["estimates"]:
        print(f"{e['op']:<24} {e['layout']:<14} estimate {e['estimate_ms']:8.3f} ms  floor {e['floor_ms']:.3f} ms  "
              f"{e['pct_roofline']:5.1f}% of roofline  ({e['bound']})")
    failed = [r for r in summary["triton"] if "error" in r]
    return 1 if failed else 0


def run(arch_name: str, out_dir: str | None, with_cuda: bool = True) -> int:
    """`deblurfast bench --static`: the report (to out_dir, default bench/results/static-sm90 for sm_90)
    in a child process without TRITON_INTERPRET (kernels imported under the interpreter cannot be compiled)."""
    import sys

    out_dir = out_dir or os.path.join("bench", "results", "static-" + arch_name.replace("_", ""))

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "deblurfast.bench.static", "--arch", arch_name]
    cmd += ["--out", out_dir] if out_dir else []
    cmd += [] if with_cuda else ["--no-cuda"]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
