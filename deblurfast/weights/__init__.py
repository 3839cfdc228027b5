"""The bundled default model: weights (safetensors), model card (default.json) and the demo image,
and their loaders."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import torch

from .. import media
from ..models import create, load_pretrained


def _file(name: str):
    return resources.as_file(resources.files(__name__).joinpath(name))


def default_card() -> dict:
    """The bundled model's card (model, configuration, training, held-out results)."""
    with resources.files(__name__).joinpath("default.json").open() as f:
        return json.load(f)


def weights_path():
    """A context manager giving the bundled weights' file path."""
    return _file(default_card()["weights"])


def default_model() -> torch.nn.Module:
    """The bundled default model with its trained weights."""
    card = default_card()
    model = create(card["model"], **card["model_config"])
    with weights_path() as path:
        return load_pretrained(model, str(path))


def demo_image() -> np.ndarray:
    """The bundled sharp image (held out from training) the demo blurs."""
    with _file("demo_sharp.png") as path:
        return media.read_image(str(path))
