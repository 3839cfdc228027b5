"""The model registry and every model's image conventions, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


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


@dataclass(frozen=True)
class IOConvention:
    """How a network wants its images; deblurfast.deblur applies it (to_model, pad, from_model).

    channel_order: "RGB" or "BGR" of the network's input and output.
    value_range: (lo, hi) the pixel range [0, 1] maps to, e.g. (-1, 1).
    multiple: H and W are padded up to a multiple of this (and cropped back).
    pad_mode: torch.nn.functional.pad mode for that padding.
    clamp: clamp the output to value_range (what the authors' test scripts do).
    output: index of the image in a tuple/list output (e.g. -1: the last stage), None for a tensor.
    min_size: the smallest H and W the network runs (after padding to `multiple`); smaller images
        are padded up to it (and cropped back).
    receptive_field: how far an output pixel sees, in input pixels: its value depends on the input
        within this distance (for a deformable convolution, with offsets up to the bound stated by
        the model), None when unknown. Tiling discards this many pixels at every inner tile border,
        so its default overlap is twice this plus a cross-fade (deblurfast.engine.plan_tiles).
    global_context: what makes every output pixel depend on the whole image (normalization
        statistics, attention, pooling over whole rows), None when nothing does. Tiles cannot
        reproduce the untiled result of such a model exactly; tiling says so.
    """

    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    multiple: int = 1
    pad_mode: str = "replicate"
    clamp: bool = True
    output: int | None = None
    min_size: int = 1
    receptive_field: int | None = None
    global_context: str | None = None

    def __post_init__(self):
        if not isinstance(self.multiple, int) or self.multiple < 1:
            raise ValueError(f"IOConvention: multiple must be an int >= 1, got {self.multiple!r}")
        if not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"IOConvention: min_size must be an int >= 1, got {self.min_size!r}")
        if self.receptive_field is not None and (not isinstance(self.receptive_field, int)
                                                 or self.receptive_field < 0):
            raise ValueError(f"IOConvention: receptive_field must be an int >= 0 or None, got "
                             f"{self.receptive_field!r}")

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (N, 3, H, W) -> the model's input convention (no padding)."""
        if self.channel_order == "BGR":
            x = x.flip(1)
        lo, hi = self.value_range
        return x * (hi - lo) + lo

    def from_model(self, y) -> torch.Tensor:
        """The model's output -> [0, 1] RGB."""
        if self.output is not None:
            y = y[self.output]
        lo, hi = self.value_range
        if self.clamp:
            y = y.clamp(lo, hi)
        y = (y - lo) / (hi - lo)
        return y.flip(1) if self.channel_order == "BGR" else y

    def padded_size(self, length: int) -> int:
        """The length (H or W) the model runs for an image side of `length`: rounded up to the
        size multiple, and at least the model's minimum size."""
        return round_up(max(length, self.min_size), self.multiple)

    def pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pads (N, C, H, W) at the bottom and right, by pad_mode, to the size the model runs
        (padded_size); returns it and (H, W), to crop the output back."""
        H, W = x.shape[-2:]
        return _pad_bottom_right(x, self.padded_size(H) - H, self.padded_size(W) - W, self.pad_mode), (H, W)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    io: IOConvention  # at the paper's configuration
    paper: str
    configure: Callable[[nn.Module, IOConvention], IOConvention] | None = None
    inputs: int = 1  # image tensors the forward takes: 2 for a reblurring net's (blurred, sharp)

    def call(self, model: nn.Module, image):
        """model's output for one input image (N, 3, H, W) in its convention; a model of several
        image inputs gets that image for each (how its cost is counted and timed)."""
        return model(*[image] * self.inputs)

    def convention(self, model: nn.Module) -> IOConvention:
        """The convention of `model`, built by this entry with any configuration."""
        return self.configure(model, self.io) if self.configure is not None else self.io


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, io: IOConvention, paper: str,
                   configure: Callable[[nn.Module, IOConvention], IOConvention] | None = None, inputs: int = 1):
    """Decorator for a builder `fn(**config) -> nn.Module`; the built module gets `io`, or
    `configure(module, io)` where the configuration changes the convention (the receptive
    field of a deeper or shallower network, for example). `inputs`: image tensors its forward takes."""

    def wrap(builder):
        _MODELS[name] = ModelEntry(name, builder, io, paper, configure, inputs)
        return builder

    return wrap


def unregister_model(name: str) -> None:
    """Removes a registered model (tests register stand-ins and remove them afterwards)."""
    model_entry(name)  # unknown names get the usual error
    del _MODELS[name]


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def create(name: str, **config) -> nn.Module:
    """Builds a registered model; every size hyper-parameter is a keyword (defaults: the paper's)."""
    entry = model_entry(name)
    model = entry.builder(**config)
    model.io = entry.convention(model)
    model.model_name = name
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
