"""Loads the compiled extension deblurfast._C, or records why it is missing.

`import deblurfast` must work without it: the reference and Triton backends do
not need it, and every compiled backend reports `EXTENSION_ERROR` as the
reason it cannot run.
"""

import glob
import logging
import os

import torch

log = logging.getLogger("deblurfast")

try:
    from . import _C  # registers the TORCH_LIBRARY(deblurfast) ops
except (ImportError, OSError) as e:
    _C = None
    if not glob.glob(os.path.join(os.path.dirname(__file__), "_C.*")):
        EXTENSION_ERROR = (
            "deblurfast._C is not built (installed with DEBLURFAST_SKIP_EXT=1, or not installed with "
            "`pip install --no-build-isolation -e .`)"
        )
        log.info("%s; compiled backends are unavailable", EXTENSION_ERROR)
    else:
        EXTENSION_ERROR = f"deblurfast._C failed to load: {type(e).__name__}: {e}"
        log.warning("%s; compiled backends are unavailable (rebuild against this torch)", EXTENSION_ERROR)
else:
    EXTENSION_ERROR = None

WITH_CUDA = bool(_C is not None and _C.WITH_CUDA)
WITH_OPENMP = bool(_C is not None and _C.WITH_OPENMP)
# The CUDA kernels' limits, stated in csrc (None without the extension).
DYNAMIC_FILTER2D_CUDA_MAX_KERNEL_SIZE = getattr(_C, "DYNAMIC_FILTER2D_CUDA_MAX_KERNEL_SIZE", None)


_COMPILED_OPS: dict[str, bool] = {}


def has_compiled_op(name: str) -> bool:
    """True when deblurfast._C has the kernels of torch.ops.deblurfast.<name> (every compiled op
    has a CPU kernel; the schema is declared in Python, deblurfast/ops/<op>/declaration.py).
    Asked once per op, when the op is registered: torch.compile cannot trace the question."""
    if name not in _COMPILED_OPS:
        _COMPILED_OPS[name] = _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
            f"deblurfast::{name}", "CPU")
    return _COMPILED_OPS[name]
