from .declaration import EXPAND_OP, MASK_OP, POOL_OP
from .function import blur_aware_mask, strip_expand, strip_pool
from .reference import blur_aware_mask_reference, strip_expand_reference, strip_pool_reference

__all__ = [
    "POOL_OP",
    "EXPAND_OP",
    "MASK_OP",
    "strip_pool",
    "strip_expand",
    "blur_aware_mask",
    "strip_pool_reference",
    "strip_expand_reference",
    "blur_aware_mask_reference",
]
