from .declaration import OP
from .function import dynamic_filter2d
from .reference import dynamic_filter2d_reference

__all__ = ["OP", "dynamic_filter2d", "dynamic_filter2d_reference"]
