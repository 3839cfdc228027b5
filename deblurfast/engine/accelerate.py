"""accelerate(model) / deaccelerate(model): switch a model's layers between the
reference implementation and deblurfast's fused kernels, in place.

A deblurfast layer (deblurfast.nn.*) carries a `backend` attribute; the models
build theirs with backend="reference" (the authors' arithmetic, the default), and
a layer with an unfused authors' path (BlurAwareAttention) with fused=False.
accelerate() sets every such layer's backend (and fused=True) on this model's own module
instances (no global patching) and can also move the model to a dtype and to
channels_last; parameters and buffers stay the same objects, so optimizers,
training and checkpointing keep working. deaccelerate() restores what
accelerate() changed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dispatch import parse_backend

_SAVED = "_deblurfast_saved"


def accelerable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer whose implementation accelerate() switches."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "backend") and m is not model]


def accelerate(model: nn.Module, backend: str = "auto", dtype: torch.dtype | None = None,
               channels_last: bool = True) -> nn.Module:
    """Switches every deblurfast layer of `model` to `backend` (default "auto": the fastest
    that can run), optionally casts to `dtype` and moves to channels_last; returns `model`."""
    parse_backend(backend)
    if getattr(model, _SAVED, None) is not None:
        deaccelerate(model)
    param = next(model.parameters(), None)
    # a model already in channels_last stays so after deaccelerate
    already = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                  for p in model.parameters())
    saved = {"backends": {}, "fused": {}, "dtype": param.dtype if param is not None else None,
             "channels_last": channels_last and not already, "cast": dtype}
    for name, layer in accelerable_layers(model):
        saved["backends"][name] = layer.backend
        layer.backend = backend
        if hasattr(layer, "fused"):
            saved["fused"][name] = layer.fused
            layer.fused = True
    if dtype is not None:
        model.to(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    setattr(model, _SAVED, saved)
    return model


def deaccelerate(model: nn.Module) -> nn.Module:
    """Undoes accelerate(): restores every layer's backend, and the dtype and memory format
    it changed (a dtype round trip rounds the parameters to the lower precision)."""
    saved = getattr(model, _SAVED, None)
    if saved is None:
        return model
    layers = dict(accelerable_layers(model))
    for name, backend in saved["backends"].items():
        if name in layers:
            layers[name].backend = backend
    for name, fused in saved["fused"].items():
        if name in layers:
            layers[name].fused = fused
    if saved["cast"] is not None and saved["dtype"] is not None:
        model.to(saved["dtype"])
    if saved["channels_last"]:
        model.to(memory_format=torch.contiguous_format)
    setattr(model, _SAVED, None)
    return model
