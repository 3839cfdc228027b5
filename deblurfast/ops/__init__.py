"""deblurfast's ops: one package per op (reference, backends, autograd,
registration, public function)."""

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
