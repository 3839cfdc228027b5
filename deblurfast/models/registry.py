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
    """

    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    multiple: int = 1
    pad_mode: str = "replicate"
    clamp: bool = True
    output: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    io: IOConvention
    paper: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, io: IOConvention, paper: str):
    """Decorator for a builder `fn(**config) -> nn.Module`; the built module gets `io`."""

    def wrap(builder):
        _MODELS[name] = ModelEntry(name, builder, io, paper)
        return builder

    return wrap


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
    model.io = entry.io
    model.model_name = name
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
