"""Loading the authors' checkpoints: every official container format, safely."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

# Where the official files keep their state_dict (shared/specs/models/*.md, "Checkpoint files").
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_state", "deblurring_state_dict",
                  "blurring_state_dict", "model")


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model; the message lists missing and unexpected keys."""


def read_state_dict(path: str, prefer: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The flat state_dict in `path` (.safetensors, or a torch file loaded with weights_only=True).

    Unwraps the first container key found — `prefer` first (a model's own, e.g.
    "blurring_state_dict"), then CONTAINER_KEYS — and strips a `module.` prefix when
    every key carries it (DataParallel files)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict or a dict holding one, got {type(obj).__name__}")
    for key in (*prefer, *CONTAINER_KEYS):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_pretrained(model: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Loads an official (or deblurfast) checkpoint into `model` and returns it.

    strict=True raises CheckpointError naming every missing key, unexpected key and
    shape mismatch; strict=False loads what fits and leaves the rest."""
    state = read_state_dict(path, getattr(model, "checkpoint_keys", ()))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        def show(title, items):
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else "")

        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}:"
            + (show("missing", missing) if missing else "")
            + (show("unexpected", unexpected) if unexpected else "")
            + (show("shape mismatch", mismatched) if mismatched else "")
        )
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=strict)
    return model
