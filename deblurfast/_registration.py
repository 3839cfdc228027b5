"""Autograd wiring shared by the compiled (torch.ops.deblurfast) and Triton
custom ops: a forward op plus a backward op that takes an output mask."""

from __future__ import annotations

from typing import Callable

import torch


def register_backward(op, backward_op: Callable, num_tensors: int) -> None:
    """Registers autograd for `op`, whose first `num_tensors` arguments are the
    differentiable tensors (None allowed) and whose other arguments are
    non-differentiable. `backward_op(grad, *tensors, *other_args, mask)`
    returns one gradient per tensor; mask[i] says whether gradient i is needed
    (an unneeded one may be any placeholder)."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:num_tensors])
        ctx.other_args = inputs[num_tensors:]

    def backward(ctx, grad):
        mask = [bool(m) for m in ctx.needs_input_grad[:num_tensors]]
        grads = backward_op(grad, *ctx.saved_tensors, *ctx.other_args, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), *([None] * len(ctx.other_args)))

    torch.library.register_autograd(op, backward, setup_context=setup_context)
