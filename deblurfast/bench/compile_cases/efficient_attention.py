"""Compile cases of kernels/efficient_attention.py: every kernel and constexpr
branch in every dtype at SAPHNet's shape (C=128, C2=32); the plain branches
also at wide maps (C=256, C2=128: two channel blocks) and narrow ones (C2=4,
padded to 16) in float16 and float32, and at the op sweep's C = C2 = 64 in float16."""
import torch

from deblurfast.bench.compile_cases import DTYPES
from deblurfast.kernels import efficient_attention as ea

KERNELS = [
    ea.efficient_attention_ctx_partial_kernel,
    ea.efficient_attention_ctx_combine_kernel,
    ea.efficient_attention_out_kernel,
    ea.efficient_attention_bwd_ctx_partial_kernel,
    ea.efficient_attention_bwd_ctx_combine_kernel,
    ea.efficient_attention_bwd_query_kernel,
    ea.efficient_attention_bwd_kv_kernel,
]



def cases():
    for name, dtype in DTYPES.items():
        yield from _cases(name, dtype, 128, 32, branches=True)
        if name in ("fp16", "fp32"):
            yield from _cases(name, dtype, 256, 128, branches=False)
            yield from _cases(name, dtype, 64, 4, branches=False)
        if name == "fp16":  # the op sweep's shape (shared/specs/benchmarks.md), for the static report
            yield from _cases(name, dtype, 64, 64, branches=False)


def _cases(name, dtype, C, C2, branches):
    cuda = torch.device("cuda")  # config() only looks at the device type: no GPU needed
    cfg = ea.config(C, C2, dtype, cuda)
    consts = ea.dtype_consts(dtype, cuda)
    tiles = ea.tiles(cfg)
    combine = {"ACC": consts["ACC"], "BLOCK_C": cfg["COMBINE_C"], "BLOCK_K": cfg["BLOCK_K"], "BLOCK_S": cfg["BLOCK_S"]}
    p, a = f"*{name}", ("*fp64" if name == "fp64" else "*fp32")  # input and accumulation pointers
    tag = f"{name}-C{C}-C2{C2}"
    yield (f"ea_ctx_partial-{tag}", ea.efficient_attention_ctx_partial_kernel,
           {"v": p, "k": p, "part_ctx": a, "part_m": a, "part_l": a}, {**consts, **tiles})
    yield (f"ea_ctx_combine-{tag}", ea.efficient_attention_ctx_combine_kernel,
           {"part_ctx": a, "part_m": a, "part_l": a, "ctx": a, "mx": a, "den": a}, combine)
    for has_gate in (True, False) if branches else (True,):
        gate, g = (p if has_gate else a), f"gate{int(has_gate)}"
        yield (f"ea_out-{tag}-{g}", ea.efficient_attention_out_kernel,
               {"q": p, "ctx": a, "gate": gate, "out": p}, {"HAS_GATE": has_gate, **consts, **tiles})
        for fuse in (True, False) if branches else (C <= cfg["BLOCK_C"],):
            yield (f"ea_bwd_ctx_partial-{tag}-{g}-fuse{int(fuse)}", ea.efficient_attention_bwd_ctx_partial_kernel,
                   {"go": p, "q": p, "ctx": a, "gate": gate, "part_a": a, "grad_q": p if fuse else a},
                   {"HAS_GATE": has_gate, "FUSE_GRAD_Q": fuse, **consts, **tiles})
        yield (f"ea_bwd_ctx_combine-{tag}-{g}", ea.efficient_attention_bwd_ctx_combine_kernel,
               {"part_a": a, "ctx": a, "den": a, "gate": gate, "dctx": a, "grad_gate": gate, "part_d": a},
               {"HAS_GATE": has_gate, "NEED_GATE": has_gate, **combine})
        yield (f"ea_bwd_query-{tag}-{g}", ea.efficient_attention_bwd_query_kernel,
               {"go": p, "q": p, "ctx": a, "gate": gate, "grad_q": p}, {"HAS_GATE": has_gate, **consts, **tiles})
    for need_v, need_k in ((True, True), (True, False), (False, True)) if branches else ((True, True),):
        yield (f"ea_bwd_kv-{tag}-v{int(need_v)}-k{int(need_k)}", ea.efficient_attention_bwd_kv_kernel,
               {"v": p, "k": p, "mx": a, "dctx": a, "part_d": a, "grad_v": p if need_v else a,
                "grad_k": p if need_k else a},
               {"NEED_V": need_v, "NEED_K": need_k, "BLOCK_S": cfg["BLOCK_S"], **consts,
                **ea.tiles(cfg, kv_gradient=True)})
