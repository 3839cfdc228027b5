"""Inference: the engine (precision, CUDA graphs, streams), accelerate/deaccelerate, the
image conventions applied to whole images (deblur) and tiling for images larger than memory."""

from .accelerate import accelerable_layers, accelerate, deaccelerate
from .cpu_path import CpuPath
from .engine import Engine, Float32Island, check_frame, indexed_device, to_low_precision
from .images import deblur, image_to_unit, unit_to_image
from .tiling import FADE, TilePlan, TilingWarning, plan_tiles, run_tiled

__all__ = [
    "FADE", "CpuPath", "Engine", "Float32Island", "TilePlan", "TilingWarning", "accelerable_layers", "accelerate",
    "check_frame", "deaccelerate", "deblur", "image_to_unit", "indexed_device", "plan_tiles", "run_tiled",
    "to_low_precision", "unit_to_image",
]
