"""deblurfast.deblur(model, image): one call from an RGB image to the deblurred
RGB image, applying the model's own conventions (deblurfast.models.IOConvention):
colour order, value range, size multiple and minimum size (pad and crop back),
output clamp; and, for images larger than memory, overlapping tiles."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models.registry import IOConvention

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


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_size(length: int, io: IOConvention) -> int:
    """The length (H or W) the model runs for an image side of `length`: rounded up to the
    size multiple, and at least the model's minimum size."""
    return _round_up(max(length, io.min_size), io.multiple)


def _pad_bottom_right(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    if mode != "reflect":
        return F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x
    # Reflection can add at most side - 1 pixels at once: pad repeatedly (mirror of the mirror),
    # and replicate a side of one pixel (its reflection is itself).
    while ph or pw:
        h, w = x.shape[-2:]
        dh, dw = (ph if h == 1 else 0), (pw if w == 1 else 0)
        if dh or dw:
            x = F.pad(x, (0, dw, 0, dh), mode="replicate")
        else:
            dh, dw = min(ph, h - 1), min(pw, w - 1)
            x = F.pad(x, (0, dw, 0, dh), mode="reflect")
        ph, pw = ph - dh, pw - dw
    return x


def pad_to_model(x: torch.Tensor, io: IOConvention) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads (N, C, H, W) at the bottom and right, by io.pad_mode, to the size the model runs
    (padded_size); returns it and (H, W), to crop the output back."""
    H, W = x.shape[-2:]
    return _pad_bottom_right(x, padded_size(H, io) - H, padded_size(W, io) - W, io.pad_mode), (H, W)


# -- tiles ------------------------------------------------------------------------------------------

FADE = 16  # pixels of cross-fade in the default overlap, beyond twice the receptive field
UNKNOWN_FIELD_OVERLAP = 32  # the default overlap of a model whose receptive field is unknown


class TilingWarning(UserWarning):
    """Tiles that may show: a too-small overlap, an adjusted tile or overlap, a model with global context."""


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut into tiles (plan_tiles): `tile` x `tile` pieces overlapping by `overlap`
    pixels (both multiples of the model's size multiple, so the tiles keep its stride grid); each
    tile's output is discarded over `margin` pixels from an inner tile border and cross-faded over
    the `overlap - 2 * margin` pixels beyond. `notes` say what was adjusted or may show."""

    tile: int
    overlap: int
    margin: int
    notes: tuple[str, ...] = ()


def _pixels(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int (pixels), got {type(value).__name__} {value!r}")
    return int(value)


def plan_tiles(io: IOConvention, tile: int, overlap: int | None = None) -> TilePlan:
    """Checks a tile size and overlap against the model's convention and fills in the default.

    tile: at least the model's minimum size; rounded down to its size multiple.
    overlap: 0 <= overlap < tile; None: twice the model's receptive field plus FADE pixels, so
        that every output pixel comes from a tile that saw everything it depends on (the tiled
        result equals the untiled one for a model without global context). Rounded up to the
        size multiple. Raises ValueError / TypeError naming the argument; adjustments and
        expected seams are listed in the plan's notes."""
    m, field = io.multiple, io.receptive_field
    tile = _pixels("tile", tile)
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    smallest = padded_size(1, io)
    if tile < smallest:
        raise ValueError(f"tile {tile} is smaller than the model's smallest input, {smallest} pixels "
                         f"(at least {io.min_size}, a multiple of {m})")
    notes = []
    if tile % m:
        notes.append(f"tile {tile} rounded down to {tile // m * m}, a multiple of the model's size multiple {m}")
        tile = tile // m * m
    exact = None if field is None else _round_up(2 * field + FADE, m)
    if overlap is None:
        overlap = exact if exact is not None else _round_up(UNKNOWN_FIELD_OVERLAP, m)
        if field is None:
            notes.append(f"the model's receptive field is unknown: tiles overlap by {overlap} pixels, and "
                         "seams may show")
        if overlap >= tile:
            overlap = tile - m
            notes.append(f"overlap clamped to {overlap}, below the tile: the model sees {field} pixels around "
                         f"each pixel, so seamless tiles need an overlap of {exact} and a tile of at least "
                         f"{exact + m}; seams may show")
    else:
        overlap = _pixels("overlap", overlap)
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0 pixels, got {overlap}")
        if overlap >= tile:
            raise ValueError(f"overlap {overlap} must be smaller than the tile, {tile}")
        if overlap % m:
            up = _round_up(overlap, m)
            adjusted = up if up < tile else overlap // m * m
            notes.append(f"overlap {overlap} rounded to {adjusted}, a multiple of the model's size multiple {m}")
            overlap = adjusted
        if field is not None and overlap < 2 * field:
            notes.append(f"overlap {overlap} is less than twice the model's receptive field ({field} pixels): "
                         f"seams may show (the default overlap, {exact}, has none)")
    if io.global_context:
        notes.append(f"the model's output depends on the whole image ({io.global_context}): the tiled result "
                     "differs from the untiled one")
    margin = field if field is not None and overlap >= 2 * field else overlap // 4
    return TilePlan(tile, overlap, margin, tuple(notes))


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]  # the last tile ends at the border
    return sorted(set(starts))


def _weights(n: int, inner_start: bool, inner_end: bool, plan: TilePlan, device, dtype) -> torch.Tensor:
    """Blend weights along one tile axis: 0 within `margin` pixels of an inner tile border (what
    the tile could not see), rising linearly over the fade beyond; 1 elsewhere and at the image
    border. Two neighbours' weights sum to 1 over their overlap."""
    fade = plan.overlap - 2 * plan.margin
    d = torch.arange(n, device=device, dtype=dtype)
    w = torch.ones(n, device=device, dtype=dtype)
    ramp = lambda dist: ((dist - plan.margin + 1) / (fade + 1)).clamp(0, 1)  # noqa: E731
    if inner_start:
        w = torch.minimum(w, ramp(d))
    if inner_end:
        w = torch.minimum(w, ramp(n - 1 - d))
    return w


def run_tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """run(x) on overlapping tiles of x (N, C, H, W), blended by TilePlan's weights.

    x must already be padded for the model (pad_to_model). The last tiles are shifted to end at
    the image border, so every tile has one size. Memory: one tile's activations at a time.
    An image that fits in one tile runs whole; otherwise the plan's notes become TilingWarnings."""
    N, C, H, W = x.shape
    tile = plan.tile
    if H <= tile and W <= tile:
        return run(x)
    for note in plan.notes:
        warnings.warn(note, TilingWarning, stacklevel=2)
    out = weight = None
    ys, xs = _tile_starts(H, tile, plan.overlap), _tile_starts(W, tile, plan.overlap)
    th, tw = min(tile, H), min(tile, W)
    for y0 in ys:
        for x0 in xs:
            y = run(x[:, :, y0:y0 + th, x0:x0 + tw])
            if out is None:
                dtype = torch.promote_types(y.dtype, torch.float32)
                out = torch.zeros(N, y.shape[1], H, W, device=y.device, dtype=dtype)
                weight = torch.zeros(1, 1, H, W, device=y.device, dtype=dtype)
            wy = _weights(th, y0 > 0, y0 + th < H, plan, y.device, dtype)
            wx = _weights(tw, x0 > 0, x0 + tw < W, plan, y.device, dtype)
            w = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y0:y0 + th, x0:x0 + tw] += y * w
            weight[:, :, y0:y0 + th, x0:x0 + tw] += w
    return out / weight


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
    x = to_model(x.to(device), io)
    x, (H, W) = pad_to_model(x, io)
    was_training = model.training
    model.eval()
    try:
        run = lambda t: from_model(model(t.to(dtype)), io)  # noqa: E731
        y = run(x) if plan is None else run_tiled(run, x, plan)
    finally:
        model.train(was_training)
    return _from_batch(y[..., :H, :W], how)
