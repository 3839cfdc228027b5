"""Parametrization and small utilities shared by the op tests."""

import contextlib
import importlib
import os

import pytest
import torch

import deblurfast
from deblurfast.dispatch import OPS, availability

# (backend, device) pairs; CUDA pairs carry the `cuda` marker.
_PAIRS = [
    ("reference", "cpu"),
    ("cpu", "cpu"),
    ("triton", "cpu"),
    ("reference", "cuda"),
    ("cuda", "cuda"),
    ("triton", "cuda"),
]


def backend_params(op_name: str):
    """pytest params (backend, device) for every backend `op_name` implements."""
    params = []
    for backend, device in _PAIRS:
        if backend not in OPS[op_name].impls:
            continue
        marks = [pytest.mark.cuda] if device == "cuda" else []
        params.append(pytest.param(backend, device, marks=marks, id=f"{backend}-{device}"))
    return params


def require_backend(op_name: str, backend: str, device: str, dtype=torch.float32):
    """Skips the test when `backend` cannot run `op_name` here (e.g. no GPU, or
    Triton on CPU without the interpreter); fails instead when the backend is
    listed in DEBLURFAST_REQUIRE_BACKENDS (set by the README's test command), so
    a broken build cannot pass as skips. Refusing a dtype always skips."""
    op = OPS[op_name]
    why = availability(backend, torch.device(device))
    required = backend == "reference" or backend in os.environ.get("DEBLURFAST_REQUIRE_BACKENDS", "").split(",")
    possible = not (device == "cuda" and not torch.cuda.is_available()) and not (
        backend == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    )
    if why is not None and required and possible:
        pytest.fail(f"{backend} must run on {device} here: {why}")
    why = why or op.refusal(backend, torch.device(device), dtype)
    if why is not None:
        pytest.skip(why)


@contextlib.contextmanager
def uninitialized_is_nan():
    """Inside, torch.empty (and at::empty) fill new memory with NaN, so a kernel
    that forgets to write an element fails the comparison (fla's trick)."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def import_torchvision(module: str = "torchvision"):
    """torchvision (or one of its modules), against which several ops are compared. Skips the test
    where it is missing, except in CI (DEBLURFAST_REQUIRE_TORCHVISION=1), where a missing
    torchvision fails it: its comparisons must not pass as skips."""
    if os.environ.get("DEBLURFAST_REQUIRE_TORCHVISION") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def grads(out, inputs, seed=1):
    """Gradients of <out, g> w.r.t. the inputs that require grad (None elsewhere), g fixed random."""
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    g = g.to(device=out.device, dtype=out.dtype)  # same values whatever the dtype
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, g, allow_unused=True))
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]


def leaf(t, requires_grad=True):
    return t.detach().clone().requires_grad_(requires_grad)


def penalty_grads(call, tensors, seed=2):
    """Second-order gradients, as a gradient penalty (WGAN-GP) takes them: the gradients of
    sum(g1 * first-order gradient) w.r.t. every tensor that requires grad, where the first-order
    gradients are those of <call(*tensors), g0> taken with create_graph=True (g0, g1 fixed random)."""
    out = call(*tensors)
    wanted = [t for t in tensors if t is not None and t.requires_grad]
    first = torch.autograd.grad(out, wanted, _fixed_like(out, seed), create_graph=True)
    penalty = sum((f * _fixed_like(f, seed + 1 + i)).sum() for i, f in enumerate(first))
    got = torch.autograd.grad(penalty, wanted, allow_unused=True)
    return [g if g is not None else torch.zeros_like(t) for g, t in zip(got, wanted)]


def _fixed_like(t, seed):
    g = torch.randn(t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g.to(device=t.device, dtype=t.dtype)


def check_double_backward(op_name, backend, device, call, tensors, **gradgradcheck_args):
    """`backend`'s second-order gradients of op `op_name` are right: gradgradcheck in float64 where
    the backend runs float64 (fast mode); else in float32 against the float64 reference's, at float32's
    tolerance. call(backend, *tensors) runs the op; tensors are float64 on the CPU (None allowed)."""
    from deblurfast.testing import assert_close

    float64 = OPS[op_name].refusal(backend, torch.device(device), torch.float64) is None
    dtype = torch.float64 if float64 else torch.float32
    require_backend(op_name, backend, device, dtype)
    on_device = [leaf(t.to(device, dtype)) if t is not None else None for t in tensors]
    if float64:
        fn = lambda *ts: call(backend, *ts)  # noqa: E731
        # fast mode (one random direction per input): interpreted Triton kernels are slow to run
        assert torch.autograd.gradgradcheck(fn, tuple(on_device), fast_mode=True, **gradgradcheck_args)
        return
    got = penalty_grads(lambda *ts: call(backend, *ts), on_device)
    want = penalty_grads(lambda *ts: call("reference", *ts), [leaf(t) if t is not None else None for t in tensors])
    assert any(b.abs().max() > 0 for b in want), "the reference's second-order gradients are zero: a useless test"
    for i, (a, b) in enumerate(zip(got, want)):
        assert_close(a.cpu(), b, torch.float32, what=f"second-order gradient {i}")


__all__ = ["backend_params", "require_backend", "uninitialized_is_nan", "grads", "leaf", "penalty_grads",
           "check_double_backward", "deblurfast"]


def adam_losses(model, loss_of, steps: int = 20, lr: float = 1e-3) -> list[float]:
    """Adam on `loss_of(model, step)` for `steps` steps from the model's weights; the loss at every step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_of(model, step)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_training_parity(reference, accelerated, loss_of, steps: int = 20, lr: float = 1e-3, rtol: float = 1e-3):
    """Liger-style convergence check: the same Adam run from one initialization on the reference and
    the accelerated model; the reference trains and the losses agree within `rtol` at every step."""
    want = adam_losses(reference, loss_of, steps, lr)
    got = adam_losses(accelerated, loss_of, steps, lr)
    assert want[-1] < want[0], f"the reference did not train: {want}"
    for step, (a, e) in enumerate(zip(got, want)):
        assert abs(a - e) <= rtol * abs(e), f"step {step}: accelerated {a} vs reference {e}"


def write_checkpoint(state_dict, folder, container: str) -> str:
    """Writes `state_dict` as a checkpoint of the `container` kind into `folder`: "safetensors",
    "bare", "module_prefix" (DataParallel), "params_ema" (BasicSR: EMA weights beside zeroed params),
    or any other key K: {"epoch": 3, K: state_dict}. Returns the path."""
    path = os.path.join(str(folder), "w.safetensors" if container == "safetensors" else "w.pth")
    if container == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    elif container == "bare":
        torch.save(state_dict, path)
    elif container == "module_prefix":
        torch.save({f"module.{k}": v for k, v in state_dict.items()}, path)
    elif container == "params_ema":  # BasicSR files hold both; the EMA weights win
        torch.save({"params": {k: torch.zeros_like(v) for k, v in state_dict.items()}, "params_ema": state_dict}, path)
    else:
        torch.save({"epoch": 3, container: state_dict}, path)
    return path
