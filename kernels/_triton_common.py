"""Host-side helpers shared by the Triton launchers, and the interpreter flag.

Imports no triton at module level: dispatch reads the flag without importing triton
(triton must see TRITON_INTERPRET before its first import)."""

from __future__ import annotations

import contextlib
import os

import torch


def interpreting() -> bool:
    """Whether Triton runs under its CPU interpreter (TRITON_INTERPRET set and not 0)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it t's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of data of `dtype`: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
            torch.float64: tl.float64}[dtype]


def tl_acc(dtype: torch.dtype):
    """acc_dtype as a Triton dtype (a kernel's ACC)."""
    return tl_dtype(acc_dtype(dtype))


def tl_dot(dtype: torch.dtype):
    """tl.dot operand dtype of data of `dtype`: its own, except bfloat16 under the interpreter,
    whose tl.dot multiplies bfloat16 bit patterns as integers (triton 3.9): there it goes in as
    float32, the same products (bfloat16 x bfloat16 is exact in float32)."""
    return tl_dtype(torch.float32 if dtype == torch.bfloat16 and interpreting() else dtype)
