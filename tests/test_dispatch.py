import threading

import pytest
import torch

import deblurfast
from deblurfast import BackendError, backends, current_backend, dynamic_filter2d, use_backend
from deblurfast._errors import ArgumentError, ArgumentTypeError
from deblurfast.dispatch import BACKENDS, OPS, parse_backend
from deblurfast.ops.dynamic_filter2d import OP
from helpers import require_backend


def _selected(spec=None, dtype=torch.float32):
    x = torch.zeros(1, 1, 4, 4, dtype=dtype)
    k = torch.zeros(1, 9, 4, 4, dtype=dtype)
    return OP.select(spec, x.device, dtype, x, k, 3, 1, "reflect", False)


def test_precedence_argument_context_environment(monkeypatch):
    monkeypatch.delenv("DEBLURFAST_BACKEND", raising=False)
    assert current_backend() == "auto"
    monkeypatch.setenv("DEBLURFAST_BACKEND", "reference")
    assert current_backend() == "reference"
    assert _selected() is OP.impls["reference"].fn
    with use_backend("triton,reference"):
        assert current_backend() == "triton,reference"
        with use_backend("reference"):
            assert current_backend() == "reference"
        assert current_backend() == "triton,reference"
        # the argument beats the context
        assert _selected("reference") is OP.impls["reference"].fn
    assert current_backend() == "reference"


def test_use_backend_restores_after_an_exception(monkeypatch):
    monkeypatch.delenv("DEBLURFAST_BACKEND", raising=False)
    with pytest.raises(KeyError):
        with use_backend("reference"):
            raise KeyError
    assert current_backend() == "auto"


def test_use_backend_is_per_thread(monkeypatch):
    monkeypatch.delenv("DEBLURFAST_BACKEND", raising=False)
    seen = []
    with use_backend("reference"):
        t = threading.Thread(target=lambda: seen.append(current_backend()))
        t.start()
        t.join()
    assert seen == ["auto"]


def test_auto_order_on_cpu():
    require_backend("dynamic_filter2d", "cpu", "cpu")
    assert _selected("auto") is OP.impls["cpu"].fn
    assert _selected("auto", torch.float16) is OP.impls["reference"].fn  # no compiled CPU half kernel
    # a preference list falls through refusals in order
    assert _selected("cuda,reference") is OP.impls["reference"].fn


def test_error_lists_every_reason():
    with pytest.raises(BackendError) as info:
        _selected("cpu,cuda", torch.float16)
    msg = str(info.value)
    assert "deblurfast.dynamic_filter2d: no backend can run a cpu float16 input with backend='cpu,cuda'" in msg
    assert "\n  cpu: " in msg and "\n  cuda: " in msg
    assert "deblurfast.backends()" in msg


@pytest.mark.parametrize("spec", ["", "fast", "cpu,", "cpu;cuda"])
def test_invalid_backend_names(spec):
    with pytest.raises(ValueError, match="backend must be 'auto'") as info:
        parse_backend(spec)
    assert isinstance(info.value, RuntimeError)  # an argument error, as the ops' (see test_argument_errors_...)
    with pytest.raises(ValueError):
        with use_backend(spec):
            pass


def test_backend_must_be_a_string():
    with pytest.raises(TypeError, match="backend must be a str"):
        dynamic_filter2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 9, 3, 3), backend=1)


def test_not_implemented_backend_is_explained():
    with pytest.raises(BackendError, match="cuda: not implemented for efficient_attention"):
        deblurfast.efficient_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), backend="cuda")


def test_backends_table(capsys):
    rows = backends()
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["op", "backend", "runs", "on", "dtypes", "/", "why", "not"]
    assert {(r["op"], r["backend"]) for r in rows} == {(op, b) for op in OPS for b in BACKENDS}
    for r in rows:
        assert bool(r["devices"]) != bool(r["reason"]), r  # runs somewhere, or says why not
        assert r["op"] in printed
    ref = next(r for r in rows if r["op"] == "deform_conv2d" and r["backend"] == "reference")
    assert "cpu" in ref["devices"] and "float16" in ref["dtypes"]
    if not torch.cuda.is_available():
        cuda = next(r for r in rows if r["op"] == "dynamic_filter2d" and r["backend"] == "cuda")
        assert cuda["devices"] == [] and cuda["reason"]


def test_argument_errors_are_value_or_type_errors_and_runtime_errors():
    """torchvision raises RuntimeError for bad arguments; ours are ValueError/TypeError and RuntimeError
    both, so code written for either catches them (issue 12, item 9)."""
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, RuntimeError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, RuntimeError)
    x = torch.zeros(1, 2, 4, 4)
    bad_calls = [
        lambda: deblurfast.deform_conv2d(x, torch.zeros(1, 17, 4, 4), torch.zeros(1, 2, 3, 3), padding=1),
        lambda: deblurfast.deform_conv2d(x, None, torch.zeros(1, 2, 3, 3), stride=1.5),
        lambda: deblurfast.deform_conv2d(x, None, torch.zeros(1, 2, 3, 3).double()),
        lambda: dynamic_filter2d(x, torch.zeros(1, 8, 4, 4)),
        lambda: deblurfast.efficient_attention(x, torch.zeros(2, 2, 4, 4), x),
        lambda: deblurfast.strip_pool(x, (0,)),
        lambda: deblurfast.strip_expand(x, x, (4, 5)),
        lambda: deblurfast.nn.DeformConv2d(0, 4, 3),
        lambda: deblurfast.nn.EfficientAttention(0),
        lambda: deblurfast.nn.BlurAwareAttention(3),
        lambda: deblurfast.nn.DynamicFilter2d(2),
    ]
    for call in bad_calls:
        with pytest.raises(RuntimeError) as info:
            call()
        assert isinstance(info.value, (ArgumentError, ArgumentTypeError)), info.value


class _EveryOp(torch.nn.Module):
    def forward(self, x, kernel, key):
        y = deblurfast.dynamic_filter2d(x, kernel, 3)
        y = y + deblurfast.pixel_adaptive_conv2d(x, kernel, torch.ones(2, 2, 3, 3), padding=1)
        y = y + deblurfast.efficient_attention(x, key, key)
        pooled = deblurfast.strip_pool(y, (1, 2))
        return deblurfast.strip_expand(pooled[1][0], pooled[1][1], (5, 6))


def test_every_op_is_an_fx_leaf():
    """torch.fx symbolic tracing records each public op as one call (torchvision's op is an fx leaf;
    feature extraction and fx quantization need it) and the traced module computes the same."""
    traced = torch.fx.symbolic_trace(_EveryOp())
    calls = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    for op in (deblurfast.dynamic_filter2d, deblurfast.pixel_adaptive_conv2d, deblurfast.efficient_attention,
               deblurfast.strip_pool, deblurfast.strip_expand):
        assert op in calls, op.__name__
    args = (torch.randn(1, 2, 5, 6), torch.randn(1, 9, 5, 6), torch.randn(1, 3, 5, 6))
    assert torch.equal(traced(*args), _EveryOp()(*args))
