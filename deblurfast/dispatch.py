"""Backend selection shared by every op.

Backends: "reference" (pure PyTorch, the executable spec), "cpu" (C++ kernels in
deblurfast._C), "cuda" (CUDA kernels in deblurfast._C), "triton" (Triton
kernels in deblurfast.kernels). A backend request is a name, "auto", or a
comma-separated preference list ("triton,reference"); "auto" expands to the
op's order for the device and dtype (fastest first).

Which request applies, first match wins: the op's `backend=` argument, the
innermost `deblurfast.use_backend(...)` block, the DEBLURFAST_BACKEND
environment variable, "auto". Each backend explains why it refuses an input
(extension missing, device, dtype, a limit of the kernel); when nothing can run,
the error lists every reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from . import _ext
from ._errors import ArgumentError, ArgumentTypeError
from .kernels._triton_common import interpreting

BACKENDS = ("reference", "cpu", "cuda", "triton")
AUTO = "auto"

# `auto` order per device type until an op's benchmarks say otherwise.
DEFAULT_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
_state = threading.local()  # dynamo guards on its attributes, so compiled code follows use_backend


class BackendError(RuntimeError):
    """No backend can run an op on the given inputs; the message lists why each refused."""


def parse_backend(spec: str) -> tuple[str, ...]:
    """Validates a backend request and returns its parts (names or "auto")."""
    if not isinstance(spec, str):
        raise ArgumentTypeError(
            f"backend must be a str such as 'auto' or 'triton,reference', got {type(spec).__name__}")
    parts = tuple(p.strip() for p in spec.split(","))
    for p in parts:
        if p != AUTO and p not in BACKENDS:
            raise ArgumentError(
                f"backend must be 'auto', one of {BACKENDS} or a comma-separated list of them, got {spec!r}")
    return parts


@contextlib.contextmanager
def use_backend(spec: str) -> Iterator[None]:
    """Within the block, ops called without `backend=` use `spec`."""
    parse_backend(spec)
    outer = getattr(_state, "stack", ())
    _state.stack = (*outer, spec)
    try:
        yield
    finally:
        _state.stack = outer


# While deblurfast.export traces a model, every op is recorded as this backend's one opaque custom
# op, whatever the call asks for: nothing runs, and the op's ONNX translation (registered beside it,
# deblurfast/ops/<op>/onnx_export.py) replaces the node. Every op has this backend.
GRAPH_BACKEND = "triton"


@contextlib.contextmanager
def tracing_for_export() -> Iterator[None]:
    """Within the block, every op selects GRAPH_BACKEND without checking that it can run."""
    outer = getattr(_state, "exporting", False)
    _state.exporting = True
    try:
        yield
    finally:
        _state.exporting = outer


def current_backend() -> str:
    """The request an op called without `backend=` uses now."""
    stack = getattr(_state, "stack", ())
    if stack:
        return stack[-1]
    return os.environ.get("DEBLURFAST_BACKEND") or AUTO


def availability(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` whatever the op, or None."""
    if backend == "reference":
        return None
    if backend in ("cpu", "cuda"):
        if _ext.EXTENSION_ERROR is not None:
            return _ext.EXTENSION_ERROR
        if backend == "cuda" and not _ext.WITH_CUDA:
            return "deblurfast._C was built without CUDA (build where torch has CUDA and nvcc is on PATH)"
        if device.type != backend:
            return f"runs on {backend} tensors, got a {device.type} tensor"
        return None
    if backend == "triton":
        if not _TRITON_INSTALLED:
            return "triton is not installed (pip install triton)"
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            if interpreting():
                return None
            return "CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before importing triton"
        return f"Triton does not run on {device.type} tensors"
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


@dataclass(frozen=True)
class Impl:
    """One backend of one op."""

    fn: Callable
    dtypes: tuple[torch.dtype, ...]
    # The backend's own limits, called with the op's arguments: why it cannot run them, or None.
    can_run: Callable[..., str | None] | None = None
    # torch.ops.deblurfast.<compiled_op> must exist (compiled backends).
    compiled_op: str | None = None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class Op:
    """An op's backends and the logic that picks one for a call."""

    def __init__(
        self,
        name: str,
        impls: dict[str, Impl],
        auto_order: dict[tuple[str, torch.dtype], tuple[str, ...]] | None = None,
    ):
        unknown = set(impls) - set(BACKENDS)
        if unknown:
            raise ValueError(f"{name}: unknown backends {sorted(unknown)}")
        self.name = name
        self.impls = impls
        self.auto_order = auto_order or {}
        OPS[name] = self

    def order(self, device: torch.device, dtype: torch.dtype) -> tuple[str, ...]:
        """What "auto" tries, fastest first."""
        return self.auto_order.get((device.type, dtype), DEFAULT_AUTO_ORDER.get(device.type, ("reference",)))

    def refusal(self, backend: str, device: torch.device, dtype: torch.dtype, *args) -> str | None:
        """Why `backend` cannot run this call, or None."""
        impl = self.impls.get(backend)
        if impl is None:
            return f"not implemented for {self.name}"
        why = availability(backend, device)
        if why is not None:
            return why
        if impl.compiled_op is not None and not _ext.has_compiled_op(impl.compiled_op):
            return f"deblurfast._C lacks torch.ops.deblurfast.{impl.compiled_op} (rebuild the extension)"
        if dtype not in impl.dtypes:
            return f"dtype {_dtype_name(dtype)} not supported (supports {', '.join(map(_dtype_name, impl.dtypes))})"
        # Without arguments (status queries) only the static conditions apply.
        return impl.can_run(*args) if impl.can_run is not None and args else None

    def __call__(self, backend: str | None, *args):
        """Runs the op on its (checked) arguments with the backend `backend` picks; the first
        argument's device and dtype are the call's."""
        return self.select(backend, args[0].device, args[0].dtype, *args)(*args)

    def select(self, spec: str | None, device: torch.device, dtype: torch.dtype, *args) -> Callable:
        """The implementation to run, per the request `spec` (None: current_backend())."""
        if getattr(_state, "exporting", False):
            return self.impls[GRAPH_BACKEND].fn
        spec = current_backend() if spec is None else spec
        names: list[str] = []
        for part in parse_backend(spec):
            for name in self.order(device, dtype) if part == AUTO else (part,):
                if name not in names:
                    names.append(name)
        reasons = {}
        for name in names:
            why = self.refusal(name, device, dtype, *args)
            if why is None:
                return self.impls[name].fn
            reasons[name] = why
        lines = "\n".join(f"  {name}: {why}" for name, why in reasons.items())
        raise BackendError(
            f"deblurfast.{self.name}: no backend can run a {device.type} {_dtype_name(dtype)} input "
            f"with backend={spec!r}:\n{lines}\nCall deblurfast.backends() to see every backend's status."
        )


OPS: dict[str, Op] = {}


# Device types each backend is meant for (for the status table).
_NATIVE_DEVICES = {"reference": ("cpu", "cuda"), "cpu": ("cpu",), "cuda": ("cuda",), "triton": ("cuda", "cpu")}


def backends(print_table: bool = True) -> list[dict]:
    """Status of every op x backend on this machine: where it runs, or why not.

    Returns one dict per (op, backend) with keys op, backend, devices, dtypes,
    reason; prints them as a table unless print_table=False.
    """
    rows = []
    for op in OPS.values():
        for backend in BACKENDS:
            impl = op.impls.get(backend)
            runs_on, reasons = [], []
            for device_type in _NATIVE_DEVICES[backend] if impl else ():
                why = op.refusal(backend, torch.device(device_type), impl.dtypes[0])
                if why is None and device_type == "cuda" and not torch.cuda.is_available():
                    why = "no CUDA device visible"
                (reasons if why else runs_on).append(why or device_type)
            if impl is None:
                reasons.append(f"not implemented for {op.name}")
            rows.append(
                {
                    "op": op.name,
                    "backend": backend,
                    "devices": runs_on,
                    "dtypes": [_dtype_name(d) for d in impl.dtypes] if impl else [],
                    "reason": "" if runs_on else "; ".join(dict.fromkeys(reasons)),
                }
            )
    if print_table:
        print(format_table(rows))
    return rows


def format_table(rows: list[dict]) -> str:
    header = ("op", "backend", "runs on", "dtypes / why not")
    body = [
        (
            r["op"],
            r["backend"],
            ",".join(r["devices"]) or "-",
            ",".join(r["dtypes"]) if r["devices"] else r["reason"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])
