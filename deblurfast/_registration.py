"""One declaration per op registers everything torch and the dispatcher need.

An op declares (OpSpec) its schema, in the public argument order; its reference (the
executable spec, same arguments); its output's shape; and its backends with their
dtypes and limits (`can_run`). `register_op` then registers:

- the compiled op torch.ops.deblurfast.<name> and <name>_backward (the C++/CUDA
  kernels in deblurfast._C attach to these schemas), when the extension is loaded;
- the Triton custom ops deblurfast::<name>_triton and <name>_triton_backward;
- for both: the fake kernels, written once here (the forward's output from the spec's
  shape; a backward's gradient empty unless output_mask asks for it), and autograd;
- the dispatcher's Op with every backend.

A backward takes (grad, *arguments, output_mask) and returns one gradient per tensor
argument, in schema order (an unneeded one, or one of an absent or integer tensor, may be
any placeholder; its fake is empty).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import _ext
from .dispatch import FLOAT_DTYPES, Impl, Op

_LIB = torch.library.Library("deblurfast", "FRAGMENT")  # the compiled ops' schemas


@dataclass(frozen=True)
class Compiled:
    """deblurfast._C's kernel for the backend's device type."""

    dtypes: tuple[torch.dtype, ...]
    # Why the kernel cannot run these arguments (a limit of it), or None.
    can_run: Callable[..., str | None] | None = None


@dataclass(frozen=True)
class Triton:
    """deblurfast.kernels.<module>'s launchers <forward>(*args) and <backward>(grad, *args, output_mask)."""

    module: str
    forward: str = "forward"
    backward: str = "backward"
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    can_run: Callable[..., str | None] | None = None
    # The output's memory format for the arguments (passed to forward as memory_format=); None: contiguous.
    memory_format: Callable[..., torch.memory_format] | None = None
    # Whether the first argument's gradient keeps that memory format too (else contiguous).
    input_gradient_keeps_format: bool = False


@dataclass(frozen=True)
class OpSpec:
    name: str
    schema: str  # "(Tensor x, int[] sizes) -> Tensor": the public arguments in the public order
    reference: Callable  # the schema's arguments -> the op's public result, differentiable
    output_shape: Callable[..., tuple]  # the schema's arguments -> the kernels' output shape
    backends: dict[str, Compiled | Triton] = field(default_factory=dict)
    # Ops whose kernels return a packed form: finish(packed, *args) is the public result, and
    # packed_reference(*args) the packed form computed by the reference (for gradients of any order).
    finish: Callable | None = None
    packed_reference: Callable | None = None
    auto_order: dict | None = None


def register_op(spec: OpSpec) -> Op:
    """Registers `spec`'s ops, fake kernels, autograd and backends; returns its dispatcher Op."""
    arguments = torch._C.parse_schema(f"deblurfast::{spec.name}{spec.schema}").arguments
    tensors = [i for i, a in enumerate(arguments) if a.type.isSubtypeOf(torch._C.OptionalType.ofTensor())]
    returns = "Tensor" if len(tensors) == 1 else f"({', '.join(['Tensor'] * len(tensors))})"
    backward_schema = (f"(Tensor grad_output, {spec.schema[1:spec.schema.rindex(')')]}, "
                       f"bool[{len(tensors)}] output_mask) -> {returns}")
    reference = spec.packed_reference or spec.reference
    impls = {"reference": Impl(spec.reference, FLOAT_DTYPES)}

    compiled = {name: b for name, b in spec.backends.items() if isinstance(b, Compiled)}
    if compiled and _ext.EXTENSION_ERROR is None:
        _LIB.define(f"{spec.name}{spec.schema}")
        _LIB.define(f"{spec.name}_backward{backward_schema}")
        qualname = f"deblurfast::{spec.name}"
        torch.library.register_fake(qualname, _output_fake(spec, None), lib=_LIB)
        torch.library.register_fake(f"{qualname}_backward", _gradients_fake(tensors), lib=_LIB)
        packet = getattr(torch.ops.deblurfast, spec.name)
        _register_autograd(qualname, getattr(torch.ops.deblurfast, f"{spec.name}_backward").default, tensors,
                           reference, lib=_LIB)
        _ext.has_compiled_op(spec.name)  # asked now, outside any torch.compile trace
        fn = _finished(packet.default, spec.finish)
        for name, b in compiled.items():
            impls[name] = Impl(fn, b.dtypes, b.can_run, compiled_op=spec.name)
    elif compiled:
        for name, b in compiled.items():
            impls[name] = Impl(_missing_extension, b.dtypes, b.can_run, compiled_op=spec.name)

    triton = spec.backends.get("triton")
    if triton is not None:
        forward, backward = _triton_ops(spec, triton, backward_schema, tensors, reference)
        impls["triton"] = Impl(_finished(forward, spec.finish), triton.dtypes, triton.can_run)
    return Op(spec.name, impls, spec.auto_order)


def _missing_extension(*args):  # never selected: the dispatcher refuses a compiled backend without _C
    raise RuntimeError(_ext.EXTENSION_ERROR)


def _finished(fn: Callable, finish: Callable | None) -> Callable:
    if finish is None:
        return fn
    return lambda *args: finish(fn(*args), *args)


def _triton_ops(spec: OpSpec, backend: Triton, backward_schema: str, tensors: list[int], reference: Callable):
    # The kernels import triton, which must see TRITON_INTERPRET first: loaded at the first call.
    def kernels():
        return importlib.import_module(f"deblurfast.kernels.{backend.module}")

    def forward(*args):
        launch = getattr(kernels(), backend.forward)
        if backend.memory_format is not None:
            return launch(*args, memory_format=backend.memory_format(*args))
        return launch(*args)

    def backward(*args):
        return getattr(kernels(), backend.backward)(*args)

    qualname = f"deblurfast::{spec.name}_triton"
    forward_op = torch.library.custom_op(qualname, forward, mutates_args=(), schema=spec.schema)
    backward_op = torch.library.custom_op(f"{qualname}_backward", backward, mutates_args=(), schema=backward_schema)
    forward_op.register_fake(_output_fake(spec, backend.memory_format))
    input_format = backend.memory_format if backend.input_gradient_keeps_format else None
    backward_op.register_fake(_gradients_fake(tensors, input_format))
    _register_autograd(forward_op, backward_op, tensors, reference)
    return forward_op, backward_op


def _output_fake(spec: OpSpec, memory_format: Callable | None) -> Callable:
    def fake(*args):
        like = args[0]
        layout = memory_format(*args) if memory_format is not None else torch.contiguous_format
        return torch.empty(spec.output_shape(*args), dtype=like.dtype, device=like.device, memory_format=layout)

    return fake


def _gradients_fake(tensors: list[int], input_format: Callable | None = None) -> Callable:
    def fake(grad, *args):
        *args, output_mask = args
        like = args[tensors[0]]
        grads = []
        for i, wanted in zip(tensors, output_mask):
            t = args[i]
            grads.append((like if t is None else t).new_empty(t.shape if wanted and t is not None else (0,)))
        if input_format is not None and output_mask[0]:
            grads[0] = grads[0].contiguous(memory_format=input_format(*args))
        return grads[0] if len(grads) == 1 else tuple(grads)

    return fake


def _register_autograd(op, backward_op, tensors: list[int], reference: Callable, lib=None) -> None:
    """Autograd of `op` through `backward_op`. With create_graph=True (grad mode on inside
    backward) the gradients come from the reference's autograd instead, so they are
    differentiable: double backward (gradient penalties, gradgradcheck) gets the reference's
    exact second-order terms. `backward_op` itself is not differentiable and says so if asked."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*(inputs[i] for i in tensors))
        ctx.inputs = [None if i in tensors else a for i, a in enumerate(inputs)]

    def backward(ctx, grad):
        mask = [bool(ctx.needs_input_grad[i]) for i in tensors]
        args = list(ctx.inputs)
        for i, t in zip(tensors, ctx.saved_tensors):
            args[i] = t
        if torch.is_grad_enabled():
            grads = _reference_gradients(reference, args, tensors, grad, mask)
        else:
            grads = backward_op(grad, *args, mask)
            grads = (grads,) if len(tensors) == 1 else grads
        out = [None] * len(args)
        for i, g, m in zip(tensors, grads, mask):
            out[i] = g if m else None
        return tuple(out)

    torch.library.register_autograd(op, backward, setup_context=setup_context, lib=lib)
    torch.library.register_autograd(backward_op, _not_differentiable(backward_op), lib=lib)


def _reference_gradients(reference: Callable, args: list, tensors: list[int], grad, mask) -> list:
    """The gradients that `mask` asks for, as differentiable functions of the tensors and
    of grad (None for the others, and for a tensor the output does not depend on)."""
    wanted = [args[i] for i, m in zip(tensors, mask) if m]
    out = reference(*args)
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
