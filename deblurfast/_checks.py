"""Argument checks shared by the public ops and modules. Errors name the argument, what was
expected and what was given (kornia style)."""

from __future__ import annotations

import operator

import torch

from ._errors import ArgumentError, ArgumentTypeError
from .dispatch import FLOAT_DTYPES

INT64_MAX = 2**63 - 1  # the compiled kernels compute sizes and positions in int64


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(op: str, name: str, t, ndim: int | tuple[int, ...], layout: str) -> None:
    """`t` is a floating-point tensor with `ndim` dimensions laid out as `layout` (e.g. "(N, C, H, W)")."""
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"{op}: {name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in ndims:
        raise ArgumentError(f"{op}: {name} must be {layout} ({' or '.join(map(str, ndims))}-D), got shape {_shape(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def check_like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """`t` has `ref`'s dtype and device."""
    if t.device != ref.device:
        raise ArgumentError(
            f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; expected the same device")
    if t.dtype != ref.dtype:
        raise ArgumentTypeError(
            f"{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; expected the same dtype")


def check_shape(op: str, name: str, t: torch.Tensor, expected: tuple, layout: str) -> None:
    """`t.shape == expected`; `layout` names the dimensions in the message."""
    if tuple(t.shape) != tuple(expected):
        exp = "(" + ", ".join(str(e) for e in expected) + ")"
        raise ArgumentError(f"{op}: {name} must have shape {layout} = {exp}, got {_shape(t)}")


def as_int(value) -> int | None:
    """`value` as an int if it is an integral scalar — an int, a numpy integer, an integer
    tensor of one element: whatever operator.index takes, as torchvision does — and not a
    bool (True is an int to Python, never a size to us); None otherwise."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def integer(op: str, name: str, value, minimum: int) -> int:
    """An integral scalar >= minimum, as an int."""
    v = as_int(value)
    if v is None:
        raise ArgumentTypeError(f"{op}: {name} must be an int, got {value!r}")
    if v < minimum:
        raise ArgumentError(f"{op}: {name} must be an int >= {minimum}, got {v}")
    return v


def pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """An integral scalar or a pair of them (tuple or list), each >= minimum, as two ints."""
    v = as_int(value)
    if v is not None:
        ints = (v, v)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        ints = tuple(as_int(e) for e in value)
    else:
        ints = (None,)
    if None in ints:
        raise ArgumentTypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(ints) < minimum:
        raise ArgumentError(f"{op}: {name} must be >= {minimum}, got {ints}")
    return ints


def _autocasting(t: torch.Tensor) -> bool:
    # is_autocast_enabled raises for device types without autocast (meta, used to count FLOPs)
    kind = t.device.type
    return torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)


def autocast_inputs(*tensors):
    """Under torch.autocast, the tensors cast to the autocast dtype (PyTorch's rule for
    convolutions and matrix products: our ops accumulate in float32 inside anyway);
    unchanged otherwise. None entries pass through."""
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None or not _autocasting(first):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)


def promote_inputs(*tensors):
    """Under torch.autocast, the tensors cast to their widest floating dtype (PyTorch's rule
    for element-wise ops with mixed inputs); unchanged otherwise."""
    floats = [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats or not _autocasting(floats[0]):
        return tensors
    dtype = floats[0].dtype
    for t in floats[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)
