"""Loading the authors' checkpoints: every official container format, safely."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

# Where the official files keep their state_dict (shared/specs/models/*.md, "Checkpoint files").
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_state", "deblurring_state_dict",
                  "blurring_state_dict", "model")


# The first bytes of a torch.save file: a zip archive, or (before PyTorch 1.6) a pickle.
TORCH_FILE_SIGNATURES = (b"PK\x03\x04", b"\x80")
OTHER_SIGNATURES = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
                    b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image", b"{": "a text (JSON?) file"}


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model; the message lists missing and unexpected keys."""


def load_file(path: str) -> object:
    """What `path` holds: a .safetensors file's tensors, or a torch file loaded on the CPU with
    weights_only=True (no code runs). Raises FileNotFoundError / IsADirectoryError for a path
    that is not a file, and CheckpointError naming the file for one that is empty, truncated,
    not a checkpoint at all, or holds anything but tensors and plain containers."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
    safetensors = path.endswith(".safetensors")
    if not safetensors:
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith(TORCH_FILE_SIGNATURES):
            kind = next((name for sig, name in OTHER_SIGNATURES.items() if head.startswith(sig)), None)
            raise CheckpointError(f"checkpoint {path!r} is not a PyTorch checkpoint"
                                  + (f" but {kind}" if kind else f" (it starts with {head!r})")
                                  + "; expected a file written by torch.save, or a .safetensors file")
    try:
        if safetensors:
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load reports a broken file with any exception type (EOFError, KeyError, ...)
        lines = [line.strip() for line in str(e).strip().splitlines()] or ["no message"]
        refused = next((line for line in lines if "WeightsUnpickler error" in line), None)
        what = ("holds Python objects that loading with weights_only=True refuses (they could run code)" if refused
                else f"cannot be read (truncated, or not a {'safetensors' if safetensors else 'PyTorch'} checkpoint)")
        why = (refused or lines[0]).split(". ")[0][:300]
        raise CheckpointError(f"checkpoint {path!r} {what}: {type(e).__name__}: {why}") from e


def read_state_dict(path: str, prefer: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The flat state_dict in `path` (.safetensors, or a torch file loaded with weights_only=True).

    Unwraps the first container key found — `prefer` first (a model's own, e.g.
    "blurring_state_dict"), then CONTAINER_KEYS — and strips a `module.` prefix when
    every key carries it (DataParallel files)."""
    obj = load_file(path)
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
