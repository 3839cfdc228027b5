"""Triton compile cases, one module per Triton kernel module: each defines KERNELS
(every @triton.jit kernel it launches) and cases() yielding (name, kernel, pointer
types, constexprs) that span the kernels' constexpr branches with the tile sizes
the launchers choose; `num_warps` among the constexprs is the launch option.
Compiled for sm_80/sm_90 by tests/kernels_under_test.py and read by the static
report (deblurfast.bench.static)."""

import torch

# the dtypes the cases span, by the short names in their case names, and their Triton pointer types
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
PTR = {name: f"*{name}" for name in DTYPES}
