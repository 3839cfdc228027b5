from .declaration import OP
from .function import deform_conv2d, pixel_adaptive_conv2d
from .reference import deform_conv2d_reference

__all__ = ["OP", "deform_conv2d", "pixel_adaptive_conv2d", "deform_conv2d_reference"]
