import numpy as np
import pytest
import torch

import deblurfast
from deblurfast.nn.deform_conv import DeformConv2d, ModulatedDeformConv2d, PixelDependentFilter
from deblurfast.ops.deform_conv2d import deform_conv2d_reference
from deblurfast.testing import assert_close
from helpers import import_torchvision, leaf, require_backend


def test_deform_conv2d_module_matches_torchvision_layout():
    m = DeformConv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), groups=2)
    assert dict((k, tuple(v.shape)) for k, v in m.state_dict().items()) == {"weight": (4, 3, 3, 2), "bias": (4,)}
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    offset, mask = torch.randn(2, 2 * 6, 4, 6, dtype=torch.float64), torch.rand(2, 6, 4, 6, dtype=torch.float64)
    m = m.double()
    expected = deform_conv2d_reference(x, offset, m.weight, m.bias, (2, 1), (1, 0), (2, 1), mask)
    assert_close(m(x, offset, mask), expected)
    assert "groups=2" in repr(m)


def test_deform_conv2d_loads_torchvision_state_dict():
    torchvision = import_torchvision()
    theirs = torchvision.ops.DeformConv2d(4, 3, 3, padding=1)
    ours = DeformConv2d(4, 3, 3, padding=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, off = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6)
    assert_close(ours(x, off).double(), theirs(x, off).double(), torch.float32)


def test_modulated_deform_conv2d_is_mmcv_shaped():
    m = ModulatedDeformConv2d(128, 64, 3, stride=1, padding=1, dilation=1, groups=1, deform_groups=2, bias=True)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {"weight": (64, 128, 3, 3), "bias": (64,)}
    assert torch.equal(m.bias, torch.zeros(64))  # mmcv zeroes the bias
    assert m.weight.abs().max() <= 1 / (128 * 9) ** 0.5  # and draws weights from U(-stdv, stdv)
    assert "deform_groups=2" in repr(m)
    no_bias = ModulatedDeformConv2d(8, 8, 3, padding=1, bias=False)
    assert list(no_bias.state_dict()) == ["weight"]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_modulated_deform_conv2d_forward_and_grads(backend):
    require_backend("deform_conv2d", backend, "cpu", torch.float64)
    m = ModulatedDeformConv2d(4, 6, 3, padding=1, deform_groups=2, backend=backend).double()
    x = leaf(torch.randn(1, 4, 3, 4, dtype=torch.float64))
    offset = leaf(torch.randn(1, 36, 3, 4, dtype=torch.float64))
    mask = leaf(torch.rand(1, 18, 3, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda x, o, mk: m(x, o, mk), (x, offset, mask), eps=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="offset must have 2\\*deform_groups\\*kh\\*kw = 36 channels, got 18"):
        m(x, offset[:, :18], mask)


def test_module_validates_its_arguments():
    with pytest.raises(ValueError, match="divisible by groups=3"):
        DeformConv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="divisible by deform_groups=3"):
        ModulatedDeformConv2d(4, 6, 3, deform_groups=3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        PixelDependentFilter(8, kernel_size=4)


@pytest.mark.parametrize("offsets", [True, False])
def test_pixel_dependent_filter(offsets):
    torch.manual_seed(0)
    pdf = PixelDependentFilter(8, kernel_size=5, max_offset=4.0, offsets=offsets).double()
    keys = {k: tuple(v.shape) for k, v in pdf.state_dict().items()}
    expected_keys = {"weight": (8, 8, 5, 5), "bias": (8,), "kernel_conv.weight": (25, 8, 3, 3),
                     "kernel_conv.bias": (25,)}
    if offsets:
        expected_keys.update({"offset_conv.weight": (50, 8, 3, 3), "offset_conv.bias": (50,)})
    assert keys == expected_keys
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    if offsets:
        assert torch.equal(pdf.offsets(x), torch.zeros(2, 50, 9, 11, dtype=torch.float64))  # starts on the grid
        torch.nn.init.normal_(pdf.offset_conv.weight, std=3.0)  # large raw offsets stay within +-max_offset
        d = pdf.offsets(x)
        assert d.abs().max() <= 4.0 and d.abs().max() > 3.0
    else:
        assert pdf.offsets(x) is None
    v = pdf.kernel_conv(x)
    expected = deform_conv2d_reference(x, pdf.offsets(x), pdf.weight, pdf.bias, (1, 1), (2, 2), (1, 1), v)
    assert_close(pdf(x), expected)
    # the module trains: every parameter gets a gradient
    pdf(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pdf.parameters())


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_pixel_dependent_filter_backends_agree(backend):
    require_backend("deform_conv2d", backend, "cpu", torch.float32)
    torch.manual_seed(0)
    ref = PixelDependentFilter(8, kernel_size=5, backend="reference")
    torch.nn.init.normal_(ref.offset_conv.weight, std=0.1)
    fast = PixelDependentFilter(8, kernel_size=5, backend=backend)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(1, 8, 7, 9)
    a, b = ref(x), fast(x)
    assert_close(b.double(), a.double(), torch.float32)
    a.sum().backward()
    b.sum().backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)


# -- constructor checks, integral scalars (issue 12, items 7 and 8) ---------------------------


@pytest.mark.parametrize("args,match", [
    ((0, 4, 3), "in_channels must be an int >= 1, got 0"),
    ((4, 0, 3), "out_channels must be an int >= 1, got 0"),
    ((4, 4, 3, 1, 0, 1, 0), "groups must be an int >= 1, got 0"),
    ((4, 4, 0), r"kernel_size must be >= 1, got \(0, 0\)"),
])
def test_module_rejects_empty_sizes(args, match):
    with pytest.raises(ValueError, match=match) as info:  # was a ZeroDivisionError for in_channels=0
        DeformConv2d(*args)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(ValueError, match="deform_groups must be an int >= 1, got 0"):
        ModulatedDeformConv2d(4, 4, 3, deform_groups=0)
    with pytest.raises(TypeError, match="in_channels must be an int, got 4.0"):
        DeformConv2d(4.0, 4, 3)
    with pytest.raises(ValueError, match="backend must be 'auto'"):
        DeformConv2d(4, 4, 3, backend="fast")


def test_module_takes_integral_scalars():
    m = DeformConv2d(np.int64(4), torch.tensor(3), np.int32(3), stride=torch.tensor(1), padding=np.int64(1))
    assert m.weight.shape == (3, 4, 3, 3) and m.stride == (1, 1) and m.padding == (1, 1)
    assert all(type(v) is int for v in (m.in_channels, m.out_channels, *m.kernel_size, *m.stride))
    x, off = torch.randn(1, 4, 5, 5), torch.randn(1, 18, 5, 5)
    assert m(x, off).shape == (1, 3, 5, 5)


# -- drop-in: torch.fx, TorchScript, torch.export (issue 12, item 9) --------------------------


class _Net(torch.nn.Module):
    """A small network as feature extraction sees one: convs around a deformable conv."""

    def __init__(self, **kw):
        super().__init__()
        self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)
        self.dcn = DeformConv2d(4, 6, 3, padding=1, **kw)
        self.head = torch.nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.dcn(x, self.offset(x))))


def test_fx_symbolic_trace_keeps_the_op_as_a_leaf():
    net = _Net()
    traced = torch.fx.symbolic_trace(net)
    calls = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert deblurfast.deform_conv2d in calls  # one node, not a trace into the argument checks
    x = torch.randn(2, 4, 6, 7)
    assert torch.equal(traced(x), net(x))
    # a function called straight from user code is a leaf too, whatever name it was imported under
    from deblurfast import deform_conv2d as dcn

    def f(x, off, w):
        return dcn(x, off, w, padding=1)

    g = torch.fx.symbolic_trace(f)
    args = (x, torch.randn(2, 18, 6, 7), torch.randn(3, 4, 3, 3))
    assert torch.equal(g(*args), f(*args))


def test_torchvision_feature_extraction():
    feature_extraction = import_torchvision("torchvision.models.feature_extraction")
    train, evaluation = feature_extraction.get_graph_node_names(_Net())
    assert train == evaluation and any("deform_conv2d" in name for name in train)
    extractor = feature_extraction.create_feature_extractor(_Net(), {"dcn.deform_conv2d": "dcn"})
    assert extractor(torch.randn(1, 4, 5, 5))["dcn"].shape == (1, 6, 5, 5)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
@pytest.mark.parametrize("module", ["DeformConv2d", "ModulatedDeformConv2d", "PixelDependentFilter"])
def test_torchscript(module, tmp_path):
    """Scripted, the modules run the compiled op (the cpu backend here), save and load, and train."""
    require_backend("deform_conv2d", "cpu", "cpu", torch.float32)
    x = torch.randn(2, 4, 6, 7)
    if module == "DeformConv2d":
        m, args = DeformConv2d(4, 6, 3, padding=1), (x, torch.randn(2, 18, 6, 7), torch.rand(2, 9, 6, 7))
    elif module == "ModulatedDeformConv2d":
        m = ModulatedDeformConv2d(4, 6, 3, padding=1, deform_groups=2)
        args = (x, torch.randn(2, 36, 6, 7), torch.rand(2, 18, 6, 7))
    else:
        m, args = PixelDependentFilter(4, kernel_size=3), (x,)
    scripted = torch.jit.script(m)
    assert_close(scripted(*args).double(), m(*args).double(), torch.float32)
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    assert_close(loaded(*args).double(), m(*args).double(), torch.float32)
    loaded(*args).sum().backward()
    assert all(p.grad is not None for p in loaded.parameters())


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
def test_torchscript_refuses_python_only_backends():
    for backend in ("reference", "triton", "triton,reference"):
        with pytest.raises(RuntimeError, match=f"backend='{backend}' cannot be scripted"):
            torch.jit.script(DeformConv2d(4, 6, 3, backend=backend))
    torch.jit.script(DeformConv2d(4, 6, 3, backend="cpu,reference"))  # the compiled op can run it


def test_torch_export():
    net = _Net().eval()
    x = torch.randn(1, 4, 6, 7)
    exported = torch.export.export(net, (x,))
    assert_close(exported.module()(x).double(), net(x).double(), torch.float32)
