"""The model registry and every model's image conventions, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class IOConvention:
    """How a network wants its images; deblurfast.deblur applies it.

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
        so its default overlap is twice this plus a cross-fade (deblurfast.inference.plan_tiles).
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
