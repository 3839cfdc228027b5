"""ONNX export of every network (deblurfast.export, `deblurfast export`): onnxruntime's output equals
the PyTorch model's at two sizes through the dynamic axes (the suite's same-input rule: compared
to a float64 run of the model), the DCN networks' graphs hold DeformConv nodes and standard
operators only, the command line writes a file that loads, and bad input gets a clear error and
leaves no file. Reduced widths keep each export to seconds of tracing."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from deblurfast import cli, export  # noqa: E402
from deblurfast._errors import ArgumentError  # noqa: E402
from deblurfast.models import create  # noqa: E402
from deblurfast.models.registry import IOConvention, register_model  # noqa: E402
from deblurfast.ops import deform_conv2d  # noqa: E402
from deblurfast.testing import assert_close  # noqa: E402

# name -> (registered model, reduced config, has DCN layers)
NETWORKS = {
    "aspdc": ("aspdc", dict(channels=(4, 8, 8), head_res_blocks=1, group_res_blocks=1, mask_res_blocks=1), True),
    "saphnet": ("saphnet", dict(channels=16, attention_maps=4, num_blocks=1), True),
    "saphnet_a": ("saphnet", dict(channels=16, attention_maps=4, num_blocks=1, offsets=False), True),
    "banet": ("banet", dict(channels=8, num_bams=2, stem_channels=8), False),
    "banet_plus": ("banet_plus", dict(channels=8, num_bams=1, stem_channels=8), False),
    "attentive_msnet": ("attentive_msnet", dict(widths=(8, 16, 32), reduction=4, num_blocks=1), False),
    "rdafnet_ss": ("rdafnet_ss", dict(width=4, num_blocks=2), False),
    "rdafnet_ms": ("rdafnet_ms", dict(width=4, num_blocks=(1, 1, 1)), False),
}


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Default initialization plus noise, so that the zero-initialized offset and mask predictors
    give non-trivial offsets and masks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def sizes(io: IOConvention) -> list[tuple[int, int]]:
    """The export example's size, then H and W about twice and 1.5 times it (multiples of the model's
    multiple): nothing of the traced size may stay fixed in the graph."""
    m = io.multiple
    first = -(-max(16, 2 * m, io.min_size) // m) * m  # two multiples at least: an axis of 1 block would be fixed
    return [(first, first + m), (2 * first + m, first + first // 2 + m)]


@pytest.fixture(scope="module", params=list(NETWORKS))
def exported(request, tmp_path_factory):
    name, config, dcn = NETWORKS[request.param]
    model = perturbed(create(name, **config), seed=len(request.param))
    path = str(tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    h, w = sizes(model.io)[0]
    export.to_onnx(model, path, height=h, width=w)
    return request.param, model, path, dcn


def test_network_matches_onnxruntime_at_two_sizes(exported):
    name, model, path, _ = exported
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    wide = create(NETWORKS[name][0], **NETWORKS[name][1]).double().eval()
    wide.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(7)
    lo, hi = model.io.value_range
    for batch, (h, w) in zip((1, 2), sizes(model.io)):
        x = lo + (hi - lo) * torch.rand(batch, 3, h, w, generator=g)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = export.MainImage(wide, model.io.output)(x.double())
            ref32 = export.MainImage(model, model.io.output)(x)
        assert_close(torch.from_numpy(got), expected, torch.float32, ref_lowp=ref32, what=f"{name} {batch}x{h}x{w}")


def test_graph_is_standard_with_deformconv_for_dcn(exported):
    name, model, path, dcn = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}, "custom domain in the graph"
    assert ("DeformConv" in {n.op_type for n in proto.graph.node}) == dcn
    meta = export.read_metadata(path)
    io = model.io
    assert (meta["multiple"], meta["channel_order"], meta["value_range"]) == (
        str(io.multiple), io.channel_order, f"[{io.value_range[0]}, {io.value_range[1]}]")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == 3 and all(d.dim_param for i, d in enumerate(dims) if i != 1)


def test_static_export_has_fixed_shape(tmp_path):
    model = perturbed(create("rdafnet_ss", width=4, num_blocks=1), seed=3)
    path = export.to_onnx(model, str(tmp_path / "static.onnx"), height=16, width=20, dynamic=False)
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 20]


# -------------------------------------------------------------------------- command line and bad input


class TinyDeform(nn.Module):
    """A registered stand-in for the CLI: predicted offsets and mask into deform_conv2d."""

    def __init__(self):
        super().__init__()
        self.offsets = nn.Conv2d(3, 27, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(3, 3, 3, 3) * 0.1)

    def forward(self, x):
        o = self.offsets(x)
        return x + deform_conv2d(x, o[:, :18], self.weight, None, padding=1, mask=torch.sigmoid(o[:, 18:]))


TINY_IO = IOConvention(channel_order="BGR", value_range=(-1.0, 1.0), multiple=4, min_size=8)
register_model("_export_tiny", TINY_IO, "none")(lambda: TinyDeform())


def test_cli_writes_a_file_that_loads(tmp_path, capsys):
    path = tmp_path / "sub" / "tiny.onnx"
    assert cli.main(["export", "_export_tiny", "-o", str(path), "--height", "8", "--width", "12"]) == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 12, 16) * 2 - 1
    torch.manual_seed(0)
    (got,) = session.run(None, {"image": x.numpy()})
    assert got.shape == (2, 3, 12, 16)
    assert export.read_metadata(str(path))["model"] == "_export_tiny"
    assert "DeformConv" in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "wrote" in capsys.readouterr().err


def test_cli_unknown_model(tmp_path, capsys):
    path = tmp_path / "x.onnx"
    assert cli.main(["export", "no_such_net", "-o", str(path)]) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_size_not_a_multiple(tmp_path, capsys):
    with pytest.raises(ArgumentError, match="height must be a multiple of 4 and at least 8.*got 10"):
        export.to_onnx(create("_export_tiny"), str(tmp_path / "x.onnx"), height=10, width=8)
    assert cli.main(["export", "_export_tiny", "-o", str(tmp_path / "y.onnx"), "--width", "6"]) == 2
    assert "width must be a multiple of 4" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArgumentError, match="cannot write .* is not a writable directory"):
        export.to_onnx(create("_export_tiny"), str(blocker / "x.onnx"), height=8, width=8)
    assert os.listdir(tmp_path) == ["file"]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(proto, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export.to_onnx(create("_export_tiny"), str(tmp_path / "x.onnx"), height=8, width=8)
    assert os.listdir(tmp_path) == []


def test_not_a_registry_model(tmp_path):
    with pytest.raises(ArgumentError, match="no IOConvention"):
        export.to_onnx(nn.Conv2d(3, 3, 1), str(tmp_path / "x.onnx"), height=8, width=8)


def test_reblur_network_is_refused(tmp_path):
    # aspdc_reblur reblurs (blurred, sharp) pairs for training; it is not a one-image deblurring network.
    with pytest.raises(ArgumentError, match=r"aspdc_reblur is not exported: it takes 2 images \(a reblurring network's \(blurred, sharp\) pair\)"):
        export.to_onnx(create("aspdc_reblur", channels=(4, 6, 8, 8)), str(tmp_path / "x.onnx"), height=16, width=16)
    assert os.listdir(tmp_path) == []
