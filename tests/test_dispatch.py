import threading

import pytest
import torch

import deblurfast
from deblurfast import BackendError, backends, current_backend, dynamic_filter2d, use_backend
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
    with pytest.raises(ValueError, match="backend must be 'auto'"):
        parse_backend(spec)
    with pytest.raises(ValueError):
        with use_backend(spec):
            pass


def test_backend_must_be_a_string():
    with pytest.raises(TypeError, match="backend must be a str"):
        dynamic_filter2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 9, 3, 3), backend=1)


def test_not_implemented_backend_is_explained():
    with pytest.raises(BackendError, match="cpu: not implemented for efficient_attention"):
        deblurfast.efficient_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), backend="cpu")


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
