"""Drop-in modules built on deblurfast's ops. Each takes `backend` (None: the
dispatch rules of deblurfast.dispatch)."""

from .blur_aware_attention import BlurAwareAttention
from .deform_conv import DeformConv2d, ModulatedDeformConv2d, PixelDependentFilter
from .dynamic_filter import DynamicFilter2d
from .efficient_attention import EfficientAttention

__all__ = ["BlurAwareAttention", "DeformConv2d", "ModulatedDeformConv2d", "PixelDependentFilter", "DynamicFilter2d", "EfficientAttention"]
