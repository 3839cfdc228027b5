"""efficient_attention's Triton backend as torch custom ops (opaque to
torch.compile, with fake kernels and autograd)."""

from typing import List, Optional, Tuple

import torch

from ..._registration import register_backward
from .reference import efficient_attention_reference


@torch.library.custom_op("deblurfast::efficient_attention_triton", mutates_args=())
def efficient_attention_triton(
    value: torch.Tensor, key: torch.Tensor, query: torch.Tensor, gate: Optional[torch.Tensor]
) -> torch.Tensor:
    from deblurfast.kernels import efficient_attention as kernels

    return kernels.forward(value, key, query, gate)


@efficient_attention_triton.register_fake
def _(value, key, query, gate):
    from deblurfast.kernels.layout import memory_format

    return value.new_empty((value.shape[0], value.shape[1], *query.shape[2:])).contiguous(
        memory_format=memory_format(query))


@torch.library.custom_op("deblurfast::efficient_attention_triton_backward", mutates_args=())
def efficient_attention_triton_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    key: torch.Tensor,
    query: torch.Tensor,
    gate: Optional[torch.Tensor],
    output_mask: List[bool],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from deblurfast.kernels import efficient_attention as kernels

    return kernels.backward(grad_output, value, key, query, gate, output_mask)


@efficient_attention_triton_backward.register_fake
def _(grad_output, value, key, query, gate, output_mask):
    # An unneeded gradient (or the gate's, when there is no gate) is an empty placeholder.
    wanted = (value, key, query, gate)
    return tuple(
        value.new_empty(t.shape if (m and t is not None) else (0,)) for t, m in zip(wanted, output_mask)
    )


register_backward(efficient_attention_triton, efficient_attention_triton_backward, num_tensors=4,
                  reference=efficient_attention_reference)
