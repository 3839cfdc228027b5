"""The contract every op keeps, written once (the pattern of torchvision's RoIOpTester).

An op's test file subclasses OpContract as `Test<Op>Contract` and supplies the op (its name in the
dispatcher), `make` (its named input tensors for a geometry), `call` (the public function) and its
geometries; pytest then runs every case below for every backend of the op (CUDA ones on a GPU,
Triton on the CPU under the interpreter). The reference backend is the executable spec that the
other backends are held to, in float64. Everything goes through the public function, never through
the op's internals, so the cases hold whatever the registration looks like.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from deblurfast._errors import ArgumentError, ArgumentTypeError
from deblurfast.testing import assert_close
from helpers import backend_params, leaf, require_backend, uninitialized_is_nan

LAYOUTS = ("contiguous", "channels_last", "non_contiguous")
LOW_PRECISION = (torch.float16, torch.bfloat16)
BAD_INPUTS = ("ndim", "dtype", "device")


def arrange(t, layout: str):
    """t with the same values in `layout`: channels_last (4-D tensors), or non_contiguous (a view
    whose last two dims are stored transposed, every other element: no dims merge)."""
    if t is None or layout == "contiguous":
        return t
    if layout == "channels_last":
        return t.to(memory_format=torch.channels_last) if t.dim() == 4 else t
    if t.dim() == 0:
        return t
    if t.dim() == 1:
        view = t.new_empty(2 * t.shape[0])[::2]
    else:
        view = t.new_empty(*t.shape[:-2], t.shape[-1], 2 * t.shape[-2])[..., ::2].transpose(-1, -2)
    view.copy_(t)
    assert view.numel() <= 1 or not view.is_contiguous()
    return view


def floating(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def cast(tensors: dict, dtype=None, device=None) -> dict:
    """The floating tensors in `dtype`, every tensor on `device` (None: as they are)."""
    return {k: None if t is None else t.to(device=device or t.device, dtype=dtype if floating(t) else t.dtype)
            for k, t in tensors.items()}


class CustomOpCalls(TorchDispatchMode):
    """Records the deblurfast custom ops a public call runs, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "deblurfast":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _fresh(a):
    """An argument for opcheck: a tensor becomes a new leaf that requires grad as the recorded one did."""
    if isinstance(a, torch.Tensor):
        return a.detach().clone().requires_grad_(a.requires_grad)
    if isinstance(a, (list, tuple)):
        return type(a)(_fresh(x) for x in a)
    return a


class OpContract:
    """The shared cases. Subclasses set `op` and the geometries and implement `make` and `call`."""

    op: str  # the op's name in deblurfast.dispatch
    geometry: dict  # a small geometry: compile, NaN-poisoned outputs, bad input, and the defaults below
    layout_geometry: dict | None = None  # float32 in each layout; default: geometry
    layout_geometries: dict = {}  # more float32 cases (contiguous): name -> geometry
    low_precision_geometries: dict | None = None  # name -> geometry; default: {"default": geometry}
    opcheck_geometries: dict | None = None  # name -> geometry; default: {"default": geometry}
    deterministic_geometry: dict | None = None  # default: geometry

    def make(self, geometry: dict, dtype: torch.dtype, device) -> dict:
        """The op's tensor arguments of `geometry` by their public names, in the op's order (None: absent)."""
        raise NotImplementedError

    def call(self, backend: str, geometry: dict, tensors: dict):
        """The public function on `tensors`; a tensor or a sequence of them."""
        raise NotImplementedError

    # -- parametrization ---------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc):
        test = metafunc.function.__name__
        if "backend" in metafunc.fixturenames:
            params = backend_params(self.op)
            if test == "test_opcheck":  # the reference is plain PyTorch: no custom op to check
                params = [p for p in params if p.values[0] != "reference"]
            metafunc.parametrize("backend,device", params)
        if "layout" in metafunc.fixturenames:
            metafunc.parametrize("layout", [*LAYOUTS, *self.layout_geometries])
        if "dtype" in metafunc.fixturenames:
            metafunc.parametrize("dtype", LOW_PRECISION, ids=["float16", "bfloat16"])
        for arg, geometries in (("low_precision_geometry", self.low_precision_geometries),
                                ("opcheck_geometry", self.opcheck_geometries)):
            if arg in metafunc.fixturenames:
                geometries = geometries or {"default": self.geometry}
                metafunc.parametrize(arg, list(geometries.values()), ids=list(geometries))
        if "wanted" in metafunc.fixturenames:
            metafunc.parametrize("wanted", self._differentiable())
        if "bad" in metafunc.fixturenames:
            cases = [(kind, name) for kind in BAD_INPUTS for name in self._bad_input_names(kind)]
            metafunc.parametrize("bad", cases, ids=[f"{kind}-{name}" for kind, name in cases])

    def _differentiable(self) -> tuple[str, ...]:
        """The inputs that take gradients: the floating ones."""
        tensors = self.make(self.geometry, torch.float32, "cpu")
        return tuple(k for k, t in tensors.items() if floating(t))

    def _bad_input_names(self, kind: str) -> list[str]:
        tensors = self.make(self.geometry, torch.float32, "cpu")
        present = [k for k, t in tensors.items() if t is not None]
        if kind == "ndim":
            return present
        if kind == "dtype":
            return [k for k in present if floating(tensors[k])]
        return present[1:]  # device: each tensor against the first

    # -- running -----------------------------------------------------------------------------------

    def run(self, backend: str, geometry: dict, tensors: dict, wanted=None):
        """The output (the outputs flattened into one tensor) and the gradients of <output, g>
        (g fixed random) w.r.t. the inputs named in `wanted` (default: every differentiable one)."""
        wanted = self._differentiable() if wanted is None else wanted
        leaves = {k: leaf(t, k in wanted) if floating(t) else t for k, t in tensors.items()}
        out = self.flat(self.call(backend, geometry, leaves))
        inputs = [leaves[k] for k in wanted if leaves[k] is not None]
        g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        got = torch.autograd.grad(out, inputs, g.to(out.device, out.dtype), allow_unused=True) if inputs else ()
        return out, dict(zip([k for k in wanted if leaves[k] is not None], got))

    @staticmethod
    def flat(out) -> torch.Tensor:
        if isinstance(out, torch.Tensor):
            return out
        return torch.cat([t.reshape(-1) for t in out])

    def require(self, backend, device, dtype):
        require_backend(self.op, backend, device, dtype)

    def assert_matches(self, got, want, dtype, ref_lowp=None):
        """(output, gradients) of a backend against the reference's, at `dtype`'s tolerance."""
        (out, grads), (ref, ref_grads) = got, want
        low_out, low_grads = ref_lowp if ref_lowp is not None else (None, {})
        assert out.dtype == dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.shape)
        assert_close(out.cpu().to(ref.dtype), ref, dtype, what="output",
                     ref_lowp=None if low_out is None else low_out.cpu().to(ref.dtype))
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            r = ref_grads[name]
            assert (g is None) == (r is None), f"grad_{name}"
            if g is not None:
                low = low_grads.get(name)
                assert g.dtype == dtype and g.shape == r.shape, f"grad_{name}"
                assert_close(g.cpu().to(r.dtype), r, dtype, what=f"grad_{name}",
                             ref_lowp=None if low is None else low.cpu().to(r.dtype))

    # -- the contract ------------------------------------------------------------------------------

    def test_float32_layouts(self, backend, device, layout):
        """float32 in every memory layout (and the op's own edge cases), output and gradients,
        against the float64 reference, with uninitialized memory poisoned by NaN."""
        self.require(backend, device, torch.float32)
        geometry = self.layout_geometries.get(layout, self.layout_geometry or self.geometry)
        tensors = self.make(geometry, torch.float32, device)
        tensors = {k: arrange(t, layout) for k, t in tensors.items()}
        with uninitialized_is_nan():
            got = self.run(backend, geometry, tensors)
        self.assert_matches(got, self.run("reference", geometry, cast(tensors, torch.float64, "cpu")),
                            torch.float32)

    def test_low_precision(self, backend, device, dtype, low_precision_geometry):
        """float16/bfloat16 against the float64 reference on the same rounded inputs, within the
        tolerance table (or the reference's own error in that dtype, where larger)."""
        self.require(backend, device, dtype)
        geometry = low_precision_geometry
        tensors = cast(self.make(geometry, torch.float32, "cpu"), dtype)  # every side sees the same values
        want = self.run("reference", geometry, cast(tensors, torch.float64))
        ref_lowp = self.run("reference", geometry, tensors)
        got = self.run(backend, geometry, cast(tensors, device=device))
        self.assert_matches(got, want, dtype, ref_lowp)

    def test_opcheck(self, backend, device, opcheck_geometry):
        """torch.library.opcheck on every deblurfast custom op the public call runs (schema, fake
        tensor, autograd registration, AOT dispatch), with the arguments the call gave it."""
        self.require(backend, device, torch.float32)
        wanted = self._differentiable()
        tensors = self.make(opcheck_geometry, torch.float32, device)
        leaves = {k: leaf(t, k in wanted) if floating(t) else t for k, t in tensors.items()}
        with CustomOpCalls() as recorder:
            self.call(backend, opcheck_geometry, leaves)
        assert recorder.calls, f"the {backend} backend ran no deblurfast custom op"
        for func, args, kwargs in recorder.calls:
            torch.library.opcheck(func, _fresh(args), _fresh(kwargs))

    def test_compile_fullgraph(self, backend, device):
        """torch.compile(fullgraph=True) gives the eager output and gradients."""
        self.require(backend, device, torch.float32)
        torch._dynamo.reset()
        geometry = self.geometry
        tensors = self.make(geometry, torch.float32, device)
        wanted = self._differentiable()

        def loss(tensors):
            return self.flat(self.call(backend, geometry, tensors)).square().sum()

        results = []
        for fn in (torch.compile(loss, fullgraph=True), loss):
            leaves = {k: leaf(t, k in wanted) if floating(t) else t for k, t in tensors.items()}
            out = fn(leaves)
            out.backward()
            results.append((out, {k: leaves[k].grad for k in wanted if leaves[k] is not None}))
        (compiled, compiled_grads), (eager, eager_grads) = results
        assert_close(compiled.double().cpu(), eager.double().cpu(), torch.float32, what="output")
        for k, g in eager_grads.items():
            assert (compiled_grads[k] is None) == (g is None), k
            if g is not None:
                assert_close(compiled_grads[k].double().cpu(), g.double().cpu(), torch.float32, what=f"grad_{k}")

    def test_deterministic(self, backend, device):
        """Under torch.use_deterministic_algorithms(True), output and gradients are bit-for-bit
        repeatable, and still right."""
        self.require(backend, device, torch.float32)
        geometry = self.deterministic_geometry or self.geometry
        tensors = self.make(geometry, torch.float32, device)
        with uninitialized_is_nan():  # turns deterministic mode on
            assert torch.are_deterministic_algorithms_enabled()
            runs = [self.run(backend, geometry, tensors) for _ in range(3)]
        for out, grads in runs[1:]:
            assert torch.equal(out, runs[0][0])
            for k, g in grads.items():
                assert torch.equal(g, runs[0][1][k]), f"grad_{k}"
        self.assert_matches(runs[0], self.run("reference", geometry, cast(tensors, torch.float64, "cpu")),
                            torch.float32)

    def test_outputs_fully_written(self, backend, device, wanted):
        """With new memory filled with NaN, every element of the output and of the one gradient asked
        for is written: a kernel that skips an element, or a backward that skips work for the
        gradients not asked for and leaves the asked one unwritten, fails the comparison."""
        self.require(backend, device, torch.float32)
        tensors = self.make(self.geometry, torch.float32, device)
        if tensors[wanted] is None:
            pytest.skip(f"{wanted} is absent in this geometry")
        with uninitialized_is_nan():
            poisoned = torch.empty(16, device=device)
            assert poisoned.isnan().all(), "torch.empty is not poisoned: this test could not fail"
            got = self.run(backend, self.geometry, tensors, wanted=(wanted,))
        want = self.run("reference", self.geometry, cast(tensors, torch.float64, "cpu"), wanted=(wanted,))
        self.assert_matches(got, want, torch.float32)

    def test_bad_input(self, bad):
        """A tensor of the wrong rank, dtype or device is refused before any backend runs, with an
        error that names the argument, what it expects and what it was given."""
        kind, name = bad
        tensors = self.make(self.geometry, torch.float32, "cpu")
        t = tensors[name]
        if kind == "ndim":
            bad_tensor, error = t.unsqueeze(0), ArgumentError
            given = [str(tuple(bad_tensor.shape))]
        elif kind == "dtype":
            first = next(k for k, v in tensors.items() if floating(v))
            other = torch.int32 if name == first else torch.float64
            bad_tensor, error = t.to(other), ArgumentTypeError
            given = [str(other).replace("torch.", "")] + ([] if name == first else ["float32"])
        else:
            bad_tensor, error = t.to("meta"), ArgumentError
            given = ["meta", "cpu"]
        with pytest.raises(error) as info:
            self.call("reference", self.geometry, dict(tensors, **{name: bad_tensor}))
        message = str(info.value)
        assert name in message and ("must" in message or "but" in message), message
        for word in given:
            assert word in message, f"{word!r} not in {message!r}"
        assert isinstance(info.value, RuntimeError)  # as torchvision's: code that catches its errors catches ours
