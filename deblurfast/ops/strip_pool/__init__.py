from .function import EXPAND_OP, POOL_OP, strip_expand, strip_pool
from .reference import strip_expand_reference, strip_pool_reference

__all__ = ["POOL_OP", "EXPAND_OP", "strip_pool", "strip_expand", "strip_pool_reference", "strip_expand_reference"]
