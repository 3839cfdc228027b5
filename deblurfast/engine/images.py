"""deblurfast.deblur(model, image): one call from an RGB image to the deblurred
RGB image, applying the model's own conventions (deblurfast.models.IOConvention):
colour order, value range, size multiple and minimum size (pad and crop back),
output clamp; and, for images larger than memory, overlapping tiles (tiling.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.registry import IOConvention
from .tiling import plan_tiles, run_tiled

# Integer image dtypes and the value that stands for 1.0.
IMAGE_SCALES = {torch.uint8: 255.0, torch.uint16: 65535.0}


def image_to_unit(t: torch.Tensor) -> torch.Tensor:
    """An image tensor (uint8, uint16, or float in [0, 1]) as float values in [0, 1]
    (float32, or float64 for a float64 image)."""
    if t.dtype in IMAGE_SCALES:
        return t.to(torch.float32) / IMAGE_SCALES[t.dtype]
    if t.dtype.is_floating_point:
        return t.to(torch.promote_types(t.dtype, torch.float32))
    raise TypeError(f"image must be uint8, uint16 or floating point in [0, 1], got {t.dtype}")


def unit_to_image(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float values -> an image of `dtype`: clamped to [0, 1]; integer dtypes scaled and rounded."""
    x = x.to(torch.promote_types(x.dtype, torch.float32)).clamp(0.0, 1.0)
    if dtype in IMAGE_SCALES:
        return (x * IMAGE_SCALES[dtype]).round().to(torch.int32).to(dtype)
    return x.to(dtype)


def _to_batch(image) -> tuple[torch.Tensor, dict]:
    """Any supported image/batch -> float (N, 3, H, W) in [0, 1], RGB; and how to undo it."""
    kind = "numpy" if isinstance(image, np.ndarray) else "torch" if isinstance(image, torch.Tensor) else None
    if kind is None:
        raise TypeError(f"deblur: image must be a numpy array or a torch tensor, got {type(image).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(image)) if kind == "numpy" else image
    channels_last_axis = kind == "numpy"  # numpy images are (H, W, 3); tensors are (3, H, W)
    if t.dim() not in (3, 4):
        layouts = "(H, W, 3) or (N, H, W, 3)" if channels_last_axis else "(3, H, W) or (N, 3, H, W)"
        raise ValueError(f"deblur: image must be {layouts}, got shape {tuple(t.shape)}")
    batched = t.dim() == 4
    t = t if batched else t.unsqueeze(0)
    if channels_last_axis:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] != 3:
        raise ValueError(f"deblur: image must have 3 (RGB) channels, got shape {tuple(image.shape)}")
    if t.shape[2] < 1 or t.shape[3] < 1:
        raise ValueError(f"deblur: image must be at least 1x1, got shape {tuple(image.shape)}")
    try:
        x = image_to_unit(t)
    except TypeError as e:
        raise TypeError(f"deblur: {e}") from None
    return x, {"kind": kind, "batched": batched, "dtype": t.dtype, "device": t.device, "hwc": channels_last_axis}


def _from_batch(x: torch.Tensor, how: dict):
    x = unit_to_image(x, how["dtype"])
    if how["hwc"]:
        x = x.permute(0, 2, 3, 1)
    x = x if how["batched"] else x[0]
    x = x.to(how["device"])
    return x.contiguous().numpy() if how["kind"] == "numpy" else x.contiguous()


@torch.no_grad()
def deblur(model: nn.Module, image, io: IOConvention | None = None, tile: int | None = None,
           overlap: int | None = None):
    """Deblurs an RGB image or batch with `model` (built by deblurfast.models.create).

    image: numpy (H, W, 3) / (N, H, W, 3) or torch (3, H, W) / (N, 3, H, W), at least 1x1;
    uint8, uint16, or float in [0, 1]. Returns the same type, shape, dtype and device. The
    model's convention (`model.io`, or `io`) decides colour order, range, padding and clamp.
    tile: process in overlapping tile x tile pieces (for images larger than memory); overlap:
    their overlap in pixels, default from the model's receptive field (see plan_tiles).
    """
    io = io or getattr(model, "io", None)
    if io is None:
        raise ValueError("deblur: the model has no `io` convention (build it with deblurfast.models.create) "
                         "and none was given")
    plan = None if tile is None else plan_tiles(io, tile, overlap)
    x, how = _to_batch(image)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    x, (H, W) = io.pad(io.to_model(x.to(device)))
    was_training = model.training
    model.eval()
    try:
        run = lambda t: io.from_model(model(t.to(dtype)))  # noqa: E731
        y = run(x) if plan is None else run_tiled(run, x, plan)
    finally:
        model.train(was_training)
    return _from_batch(y[..., :H, :W], how)
