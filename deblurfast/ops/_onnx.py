"""ONNX translations of the ops (deblurfast.export uses them).

Each op's package registers, in its onnx_export.py beside its custom ops, a function that builds
the op from standard ONNX operators with onnxscript (opset ONNX_OPSET, no custom domain).
torch.onnx.export calls it for every node of the op (custom_translation_table). The modules
import onnxscript, an optional dependency, so they load only when translation_table() is called.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

ONNX_OPSET = 19  # the first with DeformConv
OP_PACKAGES = ("deform_conv2d", "dynamic_filter2d", "efficient_attention", "strip_pool")

_TRANSLATIONS: dict[str, Callable] = {}


def onnx_translation(*qualnames: str) -> Callable:
    """Registers the decorated onnxscript function as the translation of the custom ops
    `qualnames` ("deblurfast::name"; those missing from this build are skipped)."""

    def wrap(fn: Callable) -> Callable:
        for name in qualnames:
            _TRANSLATIONS[name] = fn
        return fn

    return wrap


def translation_table() -> dict:
    """{torch.ops.<ns>.<op>.default: translation} for every op with a translation."""
    for package in OP_PACKAGES:
        importlib.import_module(f"deblurfast.ops.{package}.onnx_export")
    table = {}
    for qualname, fn in _TRANSLATIONS.items():
        namespace, name = qualname.split("::")
        try:
            packet = getattr(getattr(torch.ops, namespace), name)
        except AttributeError:  # a compiled op of an extension built without it
            continue
        table[packet.default] = fn
    return table


def int64s(*values: int):
    """A 1-D int64 constant (shapes, indices) in a translation."""
    from onnxscript import opset19 as op

    return op.Constant(value_ints=list(values))
