"""Images larger than memory: overlapping tiles whose seams do not show (plan_tiles, run_tiled)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.registry import IOConvention, round_up

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
    smallest = io.padded_size(1)
    if tile < smallest:
        raise ValueError(f"tile {tile} is smaller than the model's smallest input, {smallest} pixels "
                         f"(at least {io.min_size}, a multiple of {m})")
    notes = []
    if tile % m:
        notes.append(f"tile {tile} rounded down to {tile // m * m}, a multiple of the model's size multiple {m}")
        tile = tile // m * m
    exact = None if field is None else round_up(2 * field + FADE, m)
    if overlap is None:
        overlap = exact if exact is not None else round_up(UNKNOWN_FIELD_OVERLAP, m)
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
            up = round_up(overlap, m)
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

    x must already be padded for the model (IOConvention.pad). The last tiles are shifted to end at
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
