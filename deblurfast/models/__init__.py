"""The five deblurring networks the kernels exist for, faithful to their specs
(shared/specs/models/), checkpoint-compatible with the official releases.

    model = deblurfast.models.create("banet")           # paper sizes; every size is a keyword
    deblurfast.models.load_pretrained(model, "BANet_GoPro.pth")
    deblurfast.accelerate(model)                          # fused kernels, in place
    sharp = deblurfast.deblur(model, blurry_rgb_uint8)
"""

from . import aspdc, attentive_msnet, banet, rdafnet, saphnet  # noqa: F401  (they register themselves)
from .checkpoints import CONTAINER_KEYS, CheckpointError, load_pretrained, read_state_dict
from .registry import IOConvention, create, list_models, model_entry, num_parameters, register_model, unregister_model

__all__ = [
    "CONTAINER_KEYS", "CheckpointError", "IOConvention", "create", "list_models", "load_pretrained", "model_entry",
    "num_parameters", "read_state_dict", "register_model", "unregister_model",
]
