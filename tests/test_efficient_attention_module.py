import copy

import pytest
import torch
import torch.nn.functional as F

from deblurfast import BackendError
from deblurfast.nn.efficient_attention import EfficientAttention
from deblurfast.ops.efficient_attention import efficient_attention_reference
from deblurfast.testing import assert_close
from helpers import backend_params, require_backend

BACKENDS = backend_params("efficient_attention")
C, C2 = 6, 4


def module(cross=False, backend="reference", dtype=torch.float64, channels=C, maps=C2):
    torch.manual_seed(1)
    return EfficientAttention(channels, maps, cross=cross, backend=backend).to(dtype)


def inputs(n=2, hw=(5, 7), enc_hw=(4, 6), dtype=torch.float64, channels=C):
    x = torch.randn(n, channels, *hw, dtype=dtype)
    enc = torch.randn(n, channels, *enc_hw, dtype=dtype)
    return x, enc


def composed(m, x, enc=None):
    """The spec's formulas, written out with the module's weights and the reference op."""
    conv = lambda layer, t: F.conv2d(t, layer.weight, layer.bias)  # noqa: E731
    xm = x * torch.sigmoid(conv(m.mask_conv, x))
    value = xm if enc is None else enc * torch.sigmoid(conv(m.enc_mask_conv, enc))
    key, query = conv(m.key_conv, value), conv(m.query_conv, xm)
    gate = torch.sigmoid(xm.mean(dim=(2, 3)) @ m.gate_fc.weight.t() + m.gate_fc.bias)
    return efficient_attention_reference(value, key, query, gate) / m.maps


@pytest.mark.parametrize("cross", [False, True])
def test_matches_the_spec_including_the_one_over_maps_scale(cross):
    m = module(cross)
    x, enc = inputs()
    out = m(x, enc if cross else None)
    assert out.shape == x.shape
    assert_close(out, composed(m, x, enc if cross else None), what="module vs spec")
    # The 1/C2 is there: without it the output is C2 times larger.
    unscaled = composed(m, x, enc if cross else None) * C2
    assert (out - unscaled).abs().max() > 0.1 * unscaled.abs().max()


def test_self_and_cross_differ_and_cross_reads_enc():
    m = module(cross=True)
    x, enc = inputs()
    self_out, cross_out = m(x), m(x, enc)
    assert (self_out - cross_out).abs().max() > 1e-3
    assert_close(self_out, composed(m, x), what="cross module without enc is self-attention")
    # Query and gate come from x: the output follows x's spatial size whatever enc's.
    for enc_hw in ((1, 1), (9, 3)):
        assert m(x, inputs(enc_hw=enc_hw)[1]).shape == x.shape


def test_parameters_and_names():
    m = EfficientAttention()
    assert (m.channels, m.maps) == (128, 32)
    names = {k: tuple(v.shape) for k, v in m.named_parameters()}
    assert names == {
        "mask_conv.weight": (1, 128, 1, 1), "mask_conv.bias": (1,),
        "key_conv.weight": (32, 128, 1, 1), "key_conv.bias": (32,),
        "query_conv.weight": (32, 128, 1, 1), "query_conv.bias": (32,),
        "gate_fc.weight": (128, 128), "gate_fc.bias": (128,),
    }
    assert sum(p.numel() for p in m.parameters()) == 129 + 2 * 4128 + 16512
    cross = EfficientAttention(cross=True)
    assert sum(p.numel() for p in cross.parameters()) == 129 + 2 * 4128 + 16512 + 129
    assert "enc_mask_conv.weight" in dict(cross.named_parameters())


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] != "reference"])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backend_agrees_with_reference(backend, device, cross, layout):
    # float32 module on `backend` against the float64 module on the reference: output,
    # input gradients and every parameter gradient.
    require_backend("efficient_attention", backend, device, torch.float32)
    channels = 18  # two channel blocks on the interpreter's tiles
    ref = module(cross, "reference", torch.float64, channels)
    fast = copy.deepcopy(ref).to(device=device, dtype=torch.float32)
    fast.backend = backend
    x, enc = inputs(channels=channels)
    if layout == "channels_last":
        x, enc = x.to(memory_format=torch.channels_last), enc.to(memory_format=torch.channels_last)
    x64, enc64 = x.clone().requires_grad_(), enc.clone().requires_grad_()
    x32 = x.to(device, torch.float32).detach().requires_grad_()
    enc32 = enc.to(device, torch.float32).detach().requires_grad_()
    g = torch.randn(x.shape, dtype=torch.float64)
    out64 = ref(x64, enc64 if cross else None)
    out32 = fast(x32, enc32 if cross else None)
    assert_close(out32.cpu(), out64, torch.float32, what="output")
    out64.backward(g)
    out32.backward(g.to(device, torch.float32))
    assert_close(x32.grad.cpu(), x64.grad, torch.float32, what="grad x")
    if cross:
        assert_close(enc32.grad.cpu(), enc64.grad, torch.float32, what="grad enc")
    for (name, p64), p32 in zip(ref.named_parameters(), fast.parameters()):
        assert_close(p32.grad.cpu(), p64.grad, torch.float32, what=f"grad {name}")


@pytest.mark.parametrize("cross", [False, True])
def test_gradcheck_reference(cross):
    m = module(cross, channels=3, maps=2)
    x, enc = inputs(n=2, hw=(3, 4), enc_hw=(2, 3), channels=3)
    names = [k for k, _ in m.named_parameters()]

    def f(x, enc, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x, enc if cross else None))

    params = (p.detach().clone().requires_grad_() for p in m.parameters())
    args = (x.requires_grad_(), enc.requires_grad_(cross), *params)
    assert torch.autograd.gradcheck(f, args)


def test_backend_argument_reaches_the_op():
    m = module(backend="cuda", dtype=torch.float32)
    x, _ = inputs(dtype=torch.float32)
    with pytest.raises(BackendError, match="cuda"):
        m(x)
    m.backend = None  # normal dispatch: on CPU "auto" runs
    assert m(x).shape == x.shape


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, x, enc: module()(x, enc), "built with cross=False"),
        (lambda m, x, enc: m(x[:, :5]), r"x must be \(N, C=6, H, W\), got \(2, 5, 5, 7\)"),
        (lambda m, x, enc: m(x, enc[:1]), "batch size 2, got 1"),
        (lambda m, x, enc: m(x, enc[:, :, 0]), r"enc must be \(N, C=6, H, W\)"),
        (lambda m, x, enc: EfficientAttention(6, 0), "maps must be an int >= 1, got 0"),
    ],
)
def test_exceptions(call, match):
    m = module(cross=True)
    x, enc = inputs()
    with pytest.raises(ValueError, match=match):
        call(m, x, enc)
