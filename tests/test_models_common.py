"""The model plumbing every network shares: registry, checkpoint containers,
accelerate/deaccelerate, deblur's conventions. Uses a tiny synthetic model."""

import numpy as np
import pytest
import torch

import deblurfast
from deblurfast.models import CheckpointError, IOConvention, create, load_pretrained
from helpers import write_checkpoint
from tiny_model import TinyDeblurNet, tiny_flops

IO = IOConvention(channel_order="BGR", value_range=(-1.0, 1.0), multiple=4, pad_mode="replicate", clamp=True)


@pytest.fixture(scope="module", autouse=True)
def _tiny(model_registry):
    model_registry("_tiny_for_tests", IO, lambda width=4: TinyDeblurNet(width))


def test_create_and_list():
    m = create("_tiny_for_tests", width=6)
    assert m.io == IO and m.model_name == "_tiny_for_tests" and m.head.out_channels == 6
    assert "_tiny_for_tests" in deblurfast.models.list_models()
    with pytest.raises(ValueError, match="unknown model 'nope'; available: "):
        create("nope")


def test_unregister_removes_a_model():
    deblurfast.models.register_model("_gone", IO, "none")(lambda: TinyDeblurNet())
    deblurfast.models.unregister_model("_gone")
    assert "_gone" not in deblurfast.models.list_models()
    with pytest.raises(ValueError, match="unknown model '_gone'"):
        deblurfast.models.unregister_model("_gone")


@pytest.mark.parametrize("container", ["bare", "module_prefix", "state_dict", "params", "params_ema",
                                       "deblurring_state_dict", "blurring_state_dict", "model_state", "safetensors"])
def test_load_pretrained_containers(tmp_path, container):
    src = create("_tiny_for_tests")
    sd = src.state_dict()
    dst = create("_tiny_for_tests")
    load_pretrained(dst, write_checkpoint(sd, tmp_path, container))
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_load_pretrained_reports_what_does_not_fit(tmp_path):
    sd = create("_tiny_for_tests").state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["tail.bias"]
    sd["head.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_pretrained(create("_tiny_for_tests"), str(tmp_path / "bad.pth"))
    msg = str(info.value)
    assert "missing (1): tail.bias" in msg and "unexpected (1): extra.weight" in msg
    assert "head.weight: checkpoint (5, 3, 3, 3) vs model (4, 3, 3, 3)" in msg
    partial = load_pretrained(create("_tiny_for_tests"), str(tmp_path / "bad.pth"), strict=False)
    assert torch.equal(partial.dcn.weight, sd["dcn.weight"])
    with pytest.raises(FileNotFoundError):
        load_pretrained(create("_tiny_for_tests"), str(tmp_path / "none.pth"))


def test_load_pretrained_names_the_file_and_what_is_wrong(tmp_path):
    """An empty file, a directory, an image, a truncated checkpoint: one line naming the file."""
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    torch.save(create("_tiny_for_tests").state_dict(), tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    cases = {"empty.pth": (CheckpointError, "is empty \\(0 bytes\\)"),
             "folder.pth": (IsADirectoryError, "is a directory, not a file"),
             "photo.jpg": (CheckpointError, "is not a PyTorch checkpoint but a JPEG image"),
             "cut.pth": (CheckpointError, "cannot be read \\(truncated, or not a PyTorch checkpoint\\)"),
             "bad.safetensors": (CheckpointError, "cannot be read \\(truncated, or not a safetensors checkpoint\\)")}
    for name, (error, match) in cases.items():
        with pytest.raises(error, match=match) as info:
            load_pretrained(create("_tiny_for_tests"), str(tmp_path / name))
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value), name


def test_load_pretrained_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": create("_tiny_for_tests").state_dict(), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights only|unsupported|global"):
        load_pretrained(create("_tiny_for_tests"), str(tmp_path / "evil.pth"))


def test_accelerate_shares_parameters_and_undoes():
    m = create("_tiny_for_tests")
    params = {name: p for name, p in m.named_parameters()}
    x = torch.randn(1, 3, 8, 8)
    before = m(x)
    deblurfast.accelerate(m, backend="cpu,reference", channels_last=True)
    assert m.dcn.backend == "cpu,reference"
    assert all(p is params[name] for name, p in m.named_parameters())  # same objects: optimizers keep working
    assert m.head.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(m(x), before, rtol=1e-5, atol=1e-5)
    deblurfast.deaccelerate(m)
    assert m.dcn.backend == "reference" and m.head.weight.is_contiguous()
    assert all(p is params[name] for name, p in m.named_parameters())
    # a model that was channels_last before stays channels_last
    m.to(memory_format=torch.channels_last)
    deblurfast.deaccelerate(deblurfast.accelerate(m, backend="cpu,reference"))
    assert not m.head.weight.is_contiguous() and m.head.weight.is_contiguous(memory_format=torch.channels_last)


def test_accelerate_trains():
    m = deblurfast.accelerate(create("_tiny_for_tests"), backend="cpu,reference")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = m(torch.randn(2, 3, 8, 8)).square().mean()
    loss.backward()
    opt.step()
    assert m.dcn.weight.grad is not None and m.dcn.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["numpy_uint8", "numpy_float", "torch_uint8", "torch_float", "batch"])
def test_deblur_applies_the_conventions(kind):
    m = create("_tiny_for_tests")
    h, w = 10, 13  # not multiples of 4: padded and cropped back
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = {"numpy_uint8": rgb, "numpy_float": rgb / 255.0, "torch_uint8": torch.from_numpy(rgb).permute(2, 0, 1),
             "torch_float": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
             "batch": np.stack([rgb, rgb[::-1]])}[kind]
    out = deblurfast.deblur(m, image)
    assert type(out) is type(image) and out.shape == image.shape and out.dtype == image.dtype
    # by hand: RGB [0,1] -> BGR [-1,1], replicate-pad to 12x16, model, crop, clamp, back
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    y = torch.nn.functional.pad(x.flip(1) * 2 - 1, (0, 3, 0, 2), mode="replicate")
    with torch.no_grad():
        y = ((m(y)[..., :h, :w].clamp(-1, 1) + 1) / 2).flip(1)
    got = out[0] if kind == "batch" else out
    got = torch.as_tensor(np.asarray(got))
    if kind.startswith("numpy") or kind == "batch":
        got = got.permute(2, 0, 1)
    expected = (y[0] * 255).round().to(torch.uint8) if got.dtype == torch.uint8 else y[0].to(got.dtype)
    assert torch.equal(got, expected) if got.dtype == torch.uint8 else torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        deblurfast.deblur(m, np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        deblurfast.deblur(m, [[0]])


def test_gflops_count_convolutions_and_the_deformable_product():
    from deblurfast.cli.models import gflops_720p

    # 720 x 1280 is a multiple of 4 already: no padding
    assert gflops_720p("_tiny_for_tests") == pytest.approx(tiny_flops(720, 1280) / 1e9, rel=1e-9)


def test_models_table_has_a_cost_for_every_model(capsys):
    from deblurfast.cli.models import print_models

    rows = print_models()
    assert {r["model"] for r in rows} == set(deblurfast.models.list_models())  # this module's stand-in too
    for r in rows:
        assert float(r["gflops_720p"]) > 0, r  # "n/a (...)" means the count broke
    assert "aspdc_reblur" in capsys.readouterr().out
