"""Autograd wiring shared by the compiled (torch.ops.deblurfast) and Triton
custom ops: a forward op plus a backward op that takes an output mask."""

from __future__ import annotations

from typing import Callable

import torch


def register_backward(op, backward_op, num_tensors: int, reference: Callable) -> None:
    """Registers autograd for `op`, whose first `num_tensors` arguments are the
    differentiable tensors (None allowed) and whose other arguments are
    non-differentiable. `backward_op(grad, *tensors, *other_args, mask)`
    returns one gradient per tensor; mask[i] says whether gradient i is needed
    (an unneeded one may be any placeholder).

    `reference(*tensors, *other_args)` computes op's output in plain PyTorch. With
    create_graph=True (grad mode on inside backward) the gradients come from its
    autograd instead of `backward_op`, so they are differentiable: double backward
    (gradient penalties, gradgradcheck) gets the reference's exact second-order
    terms. `backward_op` itself is not differentiable and says so if asked."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:num_tensors])
        ctx.other_args = inputs[num_tensors:]

    def backward(ctx, grad):
        mask = [bool(m) for m in ctx.needs_input_grad[:num_tensors]]
        tensors = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _reference_gradients(reference, tensors, ctx.other_args, grad, mask)
        else:
            grads = backward_op(grad, *tensors, *ctx.other_args, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), *([None] * len(ctx.other_args)))

    torch.library.register_autograd(op, backward, setup_context=setup_context)
    torch.library.register_autograd(backward_op, _not_differentiable(backward_op))


def _reference_gradients(reference: Callable, tensors, other_args, grad, mask) -> list:
    """The gradients that `mask` asks for, as differentiable functions of the tensors and
    of grad (None for the others, and for a tensor the output does not depend on)."""
    wanted = [t for t, m in zip(tensors, mask) if m]
    out = reference(*tensors, *other_args)
    got = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    return [next(got) if m else None for m in mask]


def _not_differentiable(backward_op) -> Callable:
    # a custom_op (Triton) or an OpOverload (compiled)
    name = backward_op._qualname if hasattr(backward_op, "_qualname") else backward_op.name()

    def backward(ctx, *grads):
        raise RuntimeError(
            f"{name} is not differentiable. Differentiate the forward op with create_graph=True instead "
            "(its first-order gradients then run through the reference, which is differentiable), or "
            "call it with backend='reference'."
        )

    return backward
