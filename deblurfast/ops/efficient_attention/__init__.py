from .declaration import OP
from .function import efficient_attention
from .reference import efficient_attention_reference

__all__ = ["OP", "efficient_attention", "efficient_attention_reference"]
