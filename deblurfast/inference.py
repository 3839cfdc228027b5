"""deblurfast.deblur(model, image): one call from an RGB image to the deblurred
RGB image, applying the model's own conventions (deblurfast.models.IOConvention):
colour order, value range, size multiple (pad and crop back), output clamp."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models.registry import IOConvention


def _to_batch(image) -> tuple[torch.Tensor, dict]:
    """Any supported image/batch -> float (N, 3, H, W) in [0, 1], RGB; and how to undo it."""
    kind = "numpy" if isinstance(image, np.ndarray) else "torch" if isinstance(image, torch.Tensor) else None
    if kind is None:
        raise TypeError(f"deblur: image must be a numpy array or a torch tensor, got {type(image).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(image)) if kind == "numpy" else image
    channels_last_axis = kind == "numpy"  # numpy images are (H, W, 3); tensors are (3, H, W)
    if t.dim() not in (3, 4):
        raise ValueError(f"deblur: image must be {'(H, W, 3) or (N, H, W, 3)' if channels_last_axis else '(3, H, W) or (N, 3, H, W)'}, got shape {tuple(t.shape)}")
    batched = t.dim() == 4
    t = t if batched else t.unsqueeze(0)
    if channels_last_axis:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] != 3:
        raise ValueError(f"deblur: image must have 3 (RGB) channels, got shape {tuple(image.shape)}")
    dtype = t.dtype
    if dtype == torch.uint8:
        x = t.float() / 255.0
    elif dtype.is_floating_point:
        x = t.float()
    else:
        raise TypeError(f"deblur: image must be uint8 or floating point in [0, 1], got {dtype}")
    return x, {"kind": kind, "batched": batched, "dtype": dtype, "device": t.device, "hwc": channels_last_axis}


def _from_batch(x: torch.Tensor, how: dict):
    x = x.clamp(0.0, 1.0)
    if how["dtype"] == torch.uint8:
        x = (x * 255.0).round().to(torch.uint8)
    else:
        x = x.to(how["dtype"])
    if how["hwc"]:
        x = x.permute(0, 2, 3, 1)
    x = x if how["batched"] else x[0]
    x = x.to(how["device"])
    return x.contiguous().numpy() if how["kind"] == "numpy" else x.contiguous()


def to_model(x: torch.Tensor, io: IOConvention) -> torch.Tensor:
    """[0, 1] RGB -> the model's input convention (no padding)."""
    if io.channel_order == "BGR":
        x = x.flip(1)
    lo, hi = io.value_range
    return x * (hi - lo) + lo


def from_model(y, io: IOConvention) -> torch.Tensor:
    """The model's output -> [0, 1] RGB."""
    if io.output is not None:
        y = y[io.output]
    lo, hi = io.value_range
    if io.clamp:
        y = y.clamp(lo, hi)
    y = (y - lo) / (hi - lo)
    return y.flip(1) if io.channel_order == "BGR" else y


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> tuple[torch.Tensor, tuple[int, int]]:
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (H, W)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]  # the last tile ends at the border
    return sorted(set(starts))


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    """Blend weights along one tile axis: rising over `overlap` pixels where the tile
    overlaps a neighbour, flat (1) at the image border."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if not at_end:
            w[n - overlap:] = torch.minimum(w[n - overlap:], ramp.flip(0))
    return w


def run_tiled(run, x: torch.Tensor, tile: int, overlap: int, multiple: int) -> torch.Tensor:
    """run(x) on overlapping tiles of x (N, C, H, W), blended seamlessly.

    Tiles are `tile` x `tile` (rounded down to `multiple`, at least one multiple),
    the last ones shifted to end at the image border so every tile has one size;
    neighbours overlap by `overlap` pixels and are cross-faded with linear ramps.
    x must already be padded to `multiple`. Memory: one tile's activations at a time."""
    N, C, H, W = x.shape
    tile = max(multiple, tile // multiple * multiple)
    overlap = max(0, min(overlap, tile // 2))
    if H <= tile and W <= tile:
        return run(x)
    out = weight = None
    ys, xs = _tile_starts(H, tile, overlap), _tile_starts(W, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, H), min(tile, W)
            y = run(x[:, :, y0:y0 + th, x0:x0 + tw]).float()
            if out is None:
                out = torch.zeros(N, y.shape[1], H, W, device=y.device)
                weight = torch.zeros(1, 1, H, W, device=y.device)
            wy = _ramp(th, overlap, y0 == 0, y0 + th == H, y.device)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw == W, y.device)
            w = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y0:y0 + th, x0:x0 + tw] += y * w
            weight[:, :, y0:y0 + th, x0:x0 + tw] += w
    return out / weight


@torch.no_grad()
def deblur(model: nn.Module, image, io: IOConvention | None = None, tile: int | None = None,
           overlap: int = 32):
    """Deblurs an RGB image or batch with `model` (built by deblurfast.models.create).

    image: numpy (H, W, 3) / (N, H, W, 3) or torch (3, H, W) / (N, 3, H, W); uint8, or
    float in [0, 1]. Returns the same type, shape, dtype and device. The model's
    convention (`model.io`, or `io`) decides colour order, range, padding and clamp.
    tile: process in overlapping tile x tile pieces (for images larger than memory),
    cross-faded over `overlap` pixels.
    """
    io = io or getattr(model, "io", None)
    if io is None:
        raise ValueError("deblur: the model has no `io` convention (build it with deblurfast.models.create) "
                         "and none was given")
    x, how = _to_batch(image)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    x = to_model(x.to(device), io)
    x, (H, W) = pad_to_multiple(x, io.multiple, io.pad_mode)
    was_training = model.training
    model.eval()
    try:
        run = lambda t: from_model(model(t.to(dtype)), io)  # noqa: E731
        y = run(x) if tile is None else run_tiled(run, x, tile, overlap, io.multiple)
    finally:
        model.train(was_training)
    y = y[..., :H, :W].float()
    return _from_batch(y, how)
