"""deblurfast's ops, one package per op: reference.py (the executable spec), declaration.py (the
op's one declaration: schema, backends and their limits; deblurfast._registration turns it into
the custom ops, fakes and autograd), function.py (the public function: argument checks, then the
backend), onnx_export.py (its ONNX translation)."""

from .deform_conv2d import deform_conv2d, pixel_adaptive_conv2d
from .dynamic_filter2d import dynamic_filter2d
from .efficient_attention import efficient_attention
from .strip_pool import blur_aware_mask, strip_expand, strip_pool

__all__ = [
    "deform_conv2d",
    "pixel_adaptive_conv2d",
    "dynamic_filter2d",
    "efficient_attention",
    "strip_pool",
    "strip_expand",
    "blur_aware_mask",
]
