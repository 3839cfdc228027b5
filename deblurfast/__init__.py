"""deblurfast: fused kernels for spatially-adaptive motion-deblurring networks.

    import deblurfast
    out = deblurfast.dynamic_filter2d(x, kernel, 3, normalize="softmax")
    with deblurfast.use_backend("triton"):
        ...
    deblurfast.backends()  # which backend runs where, or why not
"""

from . import _ext, metrics, models, nn

from .dispatch import BACKENDS, BackendError, backends, current_backend, use_backend
from .engine import accelerate, deaccelerate, deblur
from .ops import (
    blur_aware_mask,
    deform_conv2d,
    dynamic_filter2d,
    efficient_attention,
    pixel_adaptive_conv2d,
    strip_expand,
    strip_pool,
)

__version__ = "0.1.0"

__all__ = [
    "accelerate",
    "deaccelerate",
    "deblur",
    "metrics",
    "models",
    "nn",
    "BACKENDS",
    "BackendError",
    "backends",
    "blur_aware_mask",
    "current_backend",
    "use_backend",
    "deform_conv2d",
    "dynamic_filter2d",
    "efficient_attention",
    "pixel_adaptive_conv2d",
    "strip_expand",
    "strip_pool",
]
