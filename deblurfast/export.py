"""ONNX export of the networks with standard operators only (docs/export.md).

    from deblurfast import export, models
    export.to_onnx(models.create("saphnet"), "saphnet.onnx", height=256, width=256)

The graph's input is the model's own input (N, 3, H, W) float32 in its convention (channel order,
value range: deblurfast.models.registry.IOConvention), with dynamic N, H and W unless
dynamic=False; H and W stay multiples of the convention's `multiple`, recorded in the graph's
metadata with the rest of the convention. The output is the model's main image. Each deblurfast
op becomes the standard ONNX operators of its translation (deblurfast/ops/<op>/onnx_export.py):
deform_conv2d a DeformConv node (opset 19).
"""

from __future__ import annotations

import copy
import json
import os

import torch
from torch import nn

from ._errors import ArgumentError, ArgumentTypeError
from ._files import atomic_path
from .dispatch import tracing_for_export
from .models.registry import IOConvention, list_models, model_entry

# Graph metadata keys (metadata_props); the values are strings.
METADATA_PREFIX = "deblurfast."
# The largest H and W the dynamic axes promise (symbolic shapes need a bound; 8K video fits).
MAX_SIZE = 8192


class MainImage(nn.Module):
    """The model with its output reduced to the main image (io.output of a tuple/list output)."""

    def __init__(self, model: nn.Module, output: int | None):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.output is None else y[self.output]


def _convention(model) -> IOConvention:
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"to_onnx: model must be a torch.nn.Module, got {type(model).__name__}")
    io = getattr(model, "io", None)
    if not isinstance(io, IOConvention):
        raise ArgumentError("to_onnx: model has no IOConvention `io`; build it with deblurfast.models.create(name)")
    name = getattr(model, "model_name", None)
    inputs = model_entry(name).inputs if name in list_models() else 1
    if inputs > 1:  # aspdc_reblur: it reblurs a (blurred, sharp) pair for ASPDC's training loss
        raise ArgumentError(f"to_onnx: {name} is not exported: it takes {inputs} images (a reblurring network's "
                            "(blurred, sharp) pair), where an exported graph takes one image to deblur (its ops "
                            "have translations: deblurfast.export.onnx_model(model, (blurred, sharp)) traces it)")
    return io


def _size(name: str, value, io: IOConvention) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"to_onnx: {name} must be an int, got {type(value).__name__}")
    if value < io.min_size or value % io.multiple:
        raise ArgumentError(f"to_onnx: {name} must be a multiple of {io.multiple} and at least {io.min_size} "
                            f"(the model's size multiple and minimum), got {value}")
    return value


def metadata(model: nn.Module, io: IOConvention, dynamic: bool) -> dict[str, str]:
    """What a runtime needs to feed the graph: the model's name and image convention."""
    values = {
        "model": getattr(model, "model_name", type(model).__name__),
        "channel_order": io.channel_order,
        "value_range": json.dumps(list(io.value_range)),
        "multiple": str(io.multiple),
        "min_size": str(io.min_size),
        "pad_mode": io.pad_mode,
        "clamp": json.dumps(io.clamp),
        "dynamic_axes": json.dumps(dynamic),
    }
    return {METADATA_PREFIX + k: v for k, v in values.items()}


def _dynamic_shapes(io: IOConvention):
    """N free; H and W free multiples of io.multiple, at least io.min_size (torch.export Dims)."""
    Dim = torch.export.Dim
    low = -(-io.min_size // io.multiple)
    if io.multiple == 1:
        h, w = Dim("height", min=max(low, 2), max=MAX_SIZE), Dim("width", min=max(low, 2), max=MAX_SIZE)
    else:
        h = io.multiple * Dim("height_blocks", min=max(low, 1), max=MAX_SIZE // io.multiple)
        w = io.multiple * Dim("width_blocks", min=max(low, 1), max=MAX_SIZE // io.multiple)
    return {"x": {0: Dim("batch", min=1), 2: h, 3: w}}


def onnx_model(module: nn.Module, args: tuple, dynamic_shapes=None, opset: int | None = None, **names):
    """`module` traced on `args` as an onnx.ModelProto: torch.onnx.export (dynamo) with every
    deblurfast op recorded as one node and replaced by its standard-op translation.
    dynamic_shapes: torch.export's, or None for the shapes of `args`; names: input_names, output_names."""
    from .ops._onnx import ONNX_OPSET, translation_table  # onnxscript is optional: needed only here

    with torch.no_grad(), tracing_for_export():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=ONNX_OPSET if opset is None else opset,
            dynamic_shapes=dynamic_shapes, custom_translation_table=translation_table(), verbose=False, **names,
        )
    return program.model_proto


def to_onnx(model: nn.Module, path: str, *, height: int, width: int, dynamic: bool = True,
            opset: int | None = None) -> str:
    """Writes `model` (built by deblurfast.models.create) as an ONNX file at `path`; returns `path`.

    Args:
        model: the network; exported in eval mode on the CPU in float32 (a copy: `model` is unchanged).
        path: the .onnx file, written atomically (no partial file on failure).
        height, width: the example input's size (multiples of the model's size multiple).
        dynamic: dynamic batch, height and width (True) or the example's fixed shape.
        opset: the ONNX opset (None: 19, the first with DeformConv; at least 19).
    """
    from .ops._onnx import ONNX_OPSET

    io = _convention(model)
    height, width = _size("height", height, io), _size("width", width, io)
    opset = ONNX_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < ONNX_OPSET:
        raise ArgumentError(f"to_onnx: opset must be an int >= {ONNX_OPSET} (DeformConv), got {opset!r}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ArgumentError(f"to_onnx: path must be a file path, got {path!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))  # created if missing, under its nearest existing ancestor
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ArgumentError(
            f"to_onnx: cannot write {path!r}: it is a folder, or {folder!r} is not a writable directory")

    wrapped = MainImage(copy.deepcopy(model), io.output).eval().to("cpu", torch.float32)
    proto = onnx_model(wrapped, (torch.zeros(1, 3, height, width),), _dynamic_shapes(io) if dynamic else None,
                       opset, input_names=["image"], output_names=["output"])
    for key, value in metadata(model, io, dynamic).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)
    return path


def read_metadata(path: str) -> dict[str, str]:
    """The deblurfast metadata of an exported file, without the prefix."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
