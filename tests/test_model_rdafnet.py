"""RDAFNet (rdafnet_ss, rdafnet_ms) against shared/specs/models/rdafnet.md.

The expected state_dicts are written here from the spec's key patterns (§4); the forward
passes are checked against an independent functional implementation of §3 (F.conv2d,
F.pad(reflect), a hand-written instance norm) driven only by the spec's key names."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblurfast
from deblurfast.engine import accelerable_layers
from deblurfast.models import CheckpointError, create, list_models, load_pretrained, num_parameters
from deblurfast.models.rdafnet import RDAFB, RDAFNetMS, RDAFNetSS
from deblurfast.testing import assert_close
from helpers import assert_training_parity

VARIANTS = ["rdafnet_ss", "rdafnet_ms"]
NARROW = {"rdafnet_ss": {"width": 4, "num_blocks": 2}, "rdafnet_ms": {"width": 4, "num_blocks": (2, 2, 2)}}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def images(out):
    """The model's images as a tuple (SS returns one tensor, MS three)."""
    return out if isinstance(out, tuple) else (out,)


def rand_image(n=2, h=8, w=12, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, h, w, generator=g, dtype=dtype) * 2 - 1)


# ---------------------------------------------------------------- state_dict (spec §4)

def rdafb_keys(prefix, n=128):
    out = []
    for i in (1, 2, 3, 4):
        out += [(f"{prefix}attn_{i}.attn.0.weight", (n, n, 1, 1)), (f"{prefix}attn_{i}.attn.0.bias", (n,)),
                (f"{prefix}conv_{i}.0.weight", (n, n, 3, 3)), (f"{prefix}conv_{i}.0.bias", (n,))]
    # the spec's order: attn_1, conv_1, ..., attn_4, conv_4 (interleaved), then c1..c3, conv_c1..3
    for i, m in ((1, 2), (2, 3), (3, 4)):
        out += [(f"{prefix}c{i}.weight", (n, m * n, 1, 1)), (f"{prefix}c{i}.bias", (n,))]
    for i in (1, 2, 3):
        out += [(f"{prefix}conv_c{i}.conv.0.weight", (n, 1, 3, 3)), (f"{prefix}conv_c{i}.conv.1.weight", (n, n, 1, 1))]
    return out


def expected_ss():
    keys = [("first.0.weight", (64, 3, 7, 7)), ("second.0.weight", (128, 64, 4, 4))]
    for i in range(2, 18):
        keys += rdafb_keys(f"second.{i}.")
    keys += [("second.18.weight", (128, 64, 4, 4)), ("third.0.weight", (64, 128, 5, 5)),
             ("third.2.weight", (3, 64, 7, 7))]
    return keys


def expected_ms():
    keys = []
    for s, count in ((1, 10), (2, 10), (3, 12)):
        for i in range(count):
            keys += rdafb_keys(f"body_block_{s}.{i}.")
    for s in (1, 2, 3):
        keys += [(f"stage_{s}_enc_1.0.weight", (64, 3, 7, 7)), (f"stage_{s}_enc_2.0.weight", (128, 64, 4, 4))]
        if s > 1:
            keys += [(f"csff_{s}_enc_1.weight", (128, 128, 1, 1)), (f"csff_{s}_enc_1.bias", (128,)),
                     (f"csff_{s}_dec_1.weight", (128, 128, 1, 1)), (f"csff_{s}_dec_1.bias", (128,))]
        keys += [(f"stage_{s}_dec_1.0.weight", (128, 64, 4, 4)), (f"stage_{s}_dec_2.0.weight", (64, 128, 5, 5))]
    for sam, cat in (("sam12", "cat12"), ("sam23", "cat23")):
        keys += [(f"{sam}.conv1.weight", (64, 64, 1, 1)), (f"{sam}.conv1.bias", (64,)),
                 (f"{sam}.conv2.weight", (3, 64, 7, 7)), (f"{sam}.conv2.bias", (3,)),
                 (f"{sam}.conv3.weight", (64, 3, 1, 1)), (f"{sam}.conv3.bias", (64,)),
                 (f"{cat}.weight", (64, 128, 1, 1)), (f"{cat}.bias", (64,))]
    keys.append(("last_conv.weight", (3, 64, 7, 7)))
    return keys


@pytest.mark.parametrize("name, expected, n_keys, n_params", [
    ("rdafnet_ss", expected_ss, 453, 14_195_072),
    ("rdafnet_ms", expected_ms, 933, 28_967_302),
])
def test_state_dict_keys_shapes_order_and_count_at_paper_size(name, expected, n_keys, n_params):
    model = create(name)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    want = expected()
    assert len(want) == n_keys and len(got) == n_keys
    assert got == want  # names, shapes and the exact order
    assert num_parameters(model) == n_params
    assert list(model.buffers()) == []  # InstanceNorm2d without running statistics
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())


def test_part_parameter_counts():
    """Per-part counts of the spec (§4): RDAFB, SAM, CSFF conv, cat conv, last conv, stem+decoder."""
    assert num_parameters(RDAFB(128)) == 856_832
    ms = create("rdafnet_ms")
    assert num_parameters(ms.sam12) == num_parameters(ms.sam23) == 13_827
    assert num_parameters(ms.csff_2_enc_1) == num_parameters(ms.csff_3_dec_1) == 16_512
    assert num_parameters(ms.cat12) == 8_256 and num_parameters(ms.last_conv) == 9_408
    stage = sum(num_parameters(getattr(ms, f"stage_2_{p}")) for p in ("enc_1", "enc_2", "dec_1", "dec_2"))
    assert stage == 476_352


def test_registry_and_io_conventions():
    assert {"rdafnet_ss", "rdafnet_ms"} <= set(list_models())
    ss, ms = create("rdafnet_ss", **NARROW["rdafnet_ss"]), create("rdafnet_ms", **NARROW["rdafnet_ms"])
    assert isinstance(ss, RDAFNetSS) and isinstance(ms, RDAFNetMS)
    for m in (ss, ms):
        io = m.io
        assert (io.channel_order, io.value_range, io.multiple, io.pad_mode, io.clamp) == \
            ("RGB", (-1.0, 1.0), 2, "reflect", True)
    assert ss.io.output is None and ms.io.output == -1
    assert ms.csff_index == (1, 1, 1) and create("rdafnet_ms").csff_index == (5, 5, 6)


def test_size_arguments_and_their_errors():
    m = create("rdafnet_ms", width=3, num_blocks=(1, 2, 3), csff_index=(0, 1, 2))
    assert [len(m.body_block_1), len(m.body_block_2), len(m.body_block_3)] == [1, 2, 3]
    assert m.body_block_1[0].c3.weight.shape == (6, 24, 1, 1) and m.stage_1_enc_1[0].weight.shape == (3, 3, 7, 7)
    ss = create("rdafnet_ss", width=5, num_blocks=3)
    assert len(ss.second) == 3 + 4 and ss.second[2].conv_1[0].weight.shape == (10, 10, 3, 3)
    with pytest.raises(ValueError, match="csff_index must be three block indices"):
        create("rdafnet_ms", num_blocks=(2, 2, 2), csff_index=(0, 2, 1))
    with pytest.raises(ValueError, match="num_blocks must be three counts"):
        create("rdafnet_ms", num_blocks=(2, 2))
    with pytest.raises(ValueError, match="num_blocks >= 0"):
        create("rdafnet_ss", num_blocks=-1)


# ---------------------------------------------------------------- forward shapes (spec §5)

@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("hw", [(4, 4), (6, 10), (8, 12)])
def test_forward_shapes(name, hw):
    model = create(name, **NARROW[name])
    x = rand_image(2, *hw)
    with torch.no_grad():
        out = model(x)
    if name == "rdafnet_ss":
        assert isinstance(out, torch.Tensor)
    else:
        assert isinstance(out, tuple) and len(out) == 3
    for y in images(out):
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        assert y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_rejects_sizes_that_do_not_fit(name):
    model = create(name, **NARROW[name])
    for bad in [(5, 8), (8, 7), (2, 4), (4, 2)]:
        with pytest.raises(ValueError, match=r"H and W must be even and at least 4.*" + f"{bad[0]}x{bad[1]}"):
            model(rand_image(1, *bad))
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\), got \(1, 4, 8, 8\)"):
        model(torch.zeros(1, 4, 8, 8))


# ---------------------------------------------------------------- independent forward (spec §3)

def _conv(x, sd, key, stride=1, pad=0, reflect=False, groups=1):
    bias = sd.get(key + ".bias")
    if reflect:
        x, pad = F.pad(x, (pad, pad, pad, pad), mode="reflect"), 0
    return F.conv2d(x, sd[key + ".weight"], bias, stride, pad, groups=groups)


def _instance_norm(x, eps=1e-5):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _lrelu(x):
    return torch.where(x >= 0, x, 0.2 * x)


def ref_rdafb(x, sd, p):
    n = x.shape[1]

    def attn(i, t):
        return torch.sigmoid(_conv(t, sd, f"{p}attn_{i}.attn.0"))

    def main(i, t):
        y = _instance_norm(_conv(t, sd, f"{p}conv_{i}.0", pad=1, reflect=True))
        return _lrelu(y) if i < 4 else y

    def fused(i, maps):
        y = _conv(torch.cat(maps, 1), sd, f"{p}c{i}")
        y = _conv(y, sd, f"{p}conv_c{i}.conv.0", pad=1, groups=n)  # depthwise, zero padding
        return _conv(y, sd, f"{p}conv_c{i}.conv.1")

    a1 = attn(1, x)
    f1 = main(1, x * a1)
    a2 = attn(2, f1)
    f2 = main(2, f1 * fused(1, [a1, a2]))
    a3 = attn(3, f2)
    f3 = main(3, f2 * fused(2, [a1, a2, a3]))
    a4 = attn(4, f3)
    f4 = main(4, f3 * fused(3, [a1, a2, a3, a4]))
    return torch.relu(f4 + x)


def ref_ss(x, sd, num_blocks):
    e = _lrelu(_conv(x, sd, "first.0", pad=3))
    d = _lrelu(_conv(e, sd, "second.0", stride=2, pad=1))
    for i in range(2, 2 + num_blocks):
        d = ref_rdafb(d, sd, f"second.{i}.")
    d = _lrelu(F.conv_transpose2d(d, sd[f"second.{2 + num_blocks}.weight"], stride=2, padding=1))
    y = _lrelu(_conv(torch.cat([e, d], 1), sd, "third.0", pad=2))  # e first
    return torch.tanh(_conv(y, sd, "third.2", pad=3)) + x


def ref_ms(img, sd):
    """Spec §3 with the paper's block counts and indices written out (10, 10, 12; E1 = output of
    block 4; CSFF before block 5 of stage 2 and block 6 of stage 3). Returns unclamped images."""
    def enc(s, t):
        return _lrelu(_conv(t, sd, f"stage_{s}_enc_1.0", pad=3))

    def down(s, t):
        return _lrelu(_conv(t, sd, f"stage_{s}_enc_2.0", stride=2, pad=1))

    def dec(s, skip, t):
        up = _lrelu(F.conv_transpose2d(t, sd[f"stage_{s}_dec_1.0.weight"], stride=2, padding=1))
        return _lrelu(_conv(torch.cat([skip, up], 1), sd, f"stage_{s}_dec_2.0", pad=2))

    def fused_body(s, t, blocks, csff_at, e, d):
        """Stage s's blocks, the previous stage's E and D added (CSFF) before block csff_at:
        the stage's output and its features right after the CSFF."""
        for i in range(blocks):
            if i == csff_at:
                t = fused = t + _conv(e, sd, f"csff_{s}_enc_1") + _conv(d, sd, f"csff_{s}_dec_1")
            t = ref_rdafb(t, sd, f"body_block_{s}.{i}.")
        return t, fused

    def sam(name, t):
        im = _conv(t, sd, f"{name}.conv2", pad=3) + img
        return _conv(t, sd, f"{name}.conv1") * torch.sigmoid(_conv(im, sd, f"{name}.conv3")) + t, im

    x1 = enc(1, img)
    t = down(1, x1)
    for i in range(10):
        t = ref_rdafb(t, sd, f"body_block_1.{i}.")
        if i == 4:
            e1 = t
    d1 = t
    s12, out1 = sam("sam12", dec(1, x1, d1))

    y3 = _conv(torch.cat([enc(2, img), s12], 1), sd, "cat12")
    d2, e2 = fused_body(2, down(2, y3), 10, 5, e1, d1)
    s23, out2 = sam("sam23", dec(2, y3, d2))

    z0 = _conv(torch.cat([enc(3, img), s23], 1), sd, "cat23")
    t, _ = fused_body(3, down(3, z0), 12, 6, e2, d2)
    out3 = _conv(dec(3, z0, t), sd, "last_conv", pad=3) + img
    return out1, out2, out3


def _perturb(model, scale=0.05, seed=3):
    """Moves every parameter off its default init (so biases and all weights matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_rdafb_matches_the_spec_order_exactly():
    block = _perturb(RDAFB(6)).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    sd = block.state_dict()
    expected = ref_rdafb(x, sd, "")
    assert_close(block(x), expected, what="RDAFB vs spec §3")
    # the check can fail: zero instead of reflect padding gives other numbers
    zero_pad = RDAFB(6).double()
    zero_pad.load_state_dict(sd)
    for i in (1, 2, 3, 4):
        getattr(zero_pad, f"conv_{i}")[0].padding_mode = "zeros"
    assert (zero_pad(x) - expected).abs().max() > 1e-3


def test_instance_norm_has_no_state_and_train_equals_eval():
    model = _perturb(create("rdafnet_ss", **NARROW["rdafnet_ss"]))
    norm = model.second[2].conv_1[1]
    assert isinstance(norm, torch.nn.InstanceNorm2d) and not norm.affine and not norm.track_running_stats
    assert norm.eps == 1e-5
    x = rand_image()
    with torch.no_grad():
        model.train()
        a = model(x)
        model.eval()
        b = model(x)
    assert torch.equal(a, b)


def test_reflect_padding_only_on_the_four_main_convs():
    block = RDAFB(4)
    pads = {name: m.padding_mode for name, m in block.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert {n for n, mode in pads.items() if mode == "reflect"} == {f"conv_{i}.0" for i in (1, 2, 3, 4)}
    assert block.conv_c1.conv[0].groups == 4 and block.conv_c1.conv[0].padding == (1, 1)
    # mirror indices: -1 -> 1, H -> H-2 (not replicate)
    conv = block.conv_1[0]
    x = torch.randn(1, 4, 5, 6)
    manual = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), manual, rtol=0, atol=1e-6)
    mirror = torch.cat([x[:, :, 1:2], x, x[:, :, -2:-1]], 2)
    mirror = torch.cat([mirror[..., 1:2], mirror, mirror[..., -2:-1]], 3)
    torch.testing.assert_close(conv(x), F.conv2d(mirror, conv.weight, conv.bias), rtol=0, atol=1e-6)


def test_ss_forward_matches_the_spec():
    model = _perturb(create("rdafnet_ss", width=3, num_blocks=2, clamp_output=False)).double()
    x = rand_image(2, 6, 8, dtype=torch.float64)
    expected = ref_ss(x, model.state_dict(), 2)
    assert_close(model(x), expected, what="SS unclamped")
    model.clamp_output = True
    assert_close(model(x), expected.clamp(-1, 1), what="SS clamped")


def test_ms_forward_matches_the_spec_at_paper_block_counts():
    """Narrow width, but the paper's 10/10/12 blocks, so the CSFF indices are the spec's."""
    model = _perturb(create("rdafnet_ms", width=2, clamp_output=False), scale=0.1).double()
    assert model.csff_index == (5, 5, 6)
    x = rand_image(2, 6, 8, dtype=torch.float64)
    expected = ref_ms(x, model.state_dict())
    got = model(x)
    for s in range(3):
        assert_close(got[s], expected[s], what=f"MS stage {s + 1}")
    # the CSFF position matters (the test can fail): moving it by one block changes stages 2 and 3
    moved = create("rdafnet_ms", width=2, clamp_output=False, csff_index=(5, 4, 6)).double()
    moved.load_state_dict(model.state_dict())
    other = moved(x)
    assert torch.equal(other[0], got[0]) and (other[1] - got[1]).abs().max() > 1e-6


@pytest.mark.parametrize("name", VARIANTS)
def test_clamp_inside_forward_and_the_unclamped_variant(name):
    model = create(name, **NARROW[name])
    with torch.no_grad():  # make the images saturate
        (model.third[2] if name == "rdafnet_ss" else model.last_conv).weight.mul_(50)
        if name == "rdafnet_ms":
            model.sam12.conv2.weight.mul_(50)
            model.sam23.conv2.weight.mul_(50)
    x = rand_image(2, 8, 8).sign() * 0.95
    with torch.no_grad():
        clamped = images(model(x))
        model.clamp_output = False
        raw = images(model(x))
    for c, r in zip(clamped, raw):
        assert r.abs().max() > 1.05  # outside the range without the clamp
        assert torch.equal(c, r.clamp(-1, 1))
    # the authors' clamp zeroes the gradient of saturated pixels
    model.clamp_output = True
    xg = x.clone().requires_grad_(True)
    images(model(xg))[-1].sum().backward()
    model.clamp_output = False
    xr = x.clone().requires_grad_(True)
    images(model(xr))[-1].sum().backward()
    assert not torch.equal(xg.grad, xr.grad)


# ---------------------------------------------------------------- checkpoints (spec §6)

@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_authors_checkpoint_container(tmp_path, name, prefix):
    """{'epoch', 'state_dict', 'optimizer'} as train_deblur.py writes it, with or without DataParallel's prefix."""
    src = create(name, **NARROW[name])
    opt = torch.optim.Adam(src.parameters(), lr=1e-4)
    x = rand_image(1, 8, 8)
    sum(y.abs().mean() for y in images(src(x))).backward()
    opt.step()  # a real Adam state in the file
    state = {prefix + k: v for k, v in src.state_dict().items()}
    torch.save({"epoch": 3000, "state_dict": state, "optimizer": opt.state_dict()}, tmp_path / "GoPro.pth")
    torch.manual_seed(123)
    dst = create(name, **NARROW[name])
    assert not torch.equal(next(dst.parameters()), next(src.parameters()))
    load_pretrained(dst, str(tmp_path / "GoPro.pth"), strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    with torch.no_grad():
        for a, b in zip(images(dst(x)), images(src(x))):
            assert torch.equal(a, b)


def test_ss_and_ms_checkpoints_do_not_mix(tmp_path):
    torch.save({"epoch": 1, "state_dict": create("rdafnet_ss", **NARROW["rdafnet_ss"]).state_dict()},
               tmp_path / "ss.pth")
    with pytest.raises(CheckpointError, match=r"missing \(.*body_block_1\.0\.attn_1\.attn\.0\.weight"):
        load_pretrained(create("rdafnet_ms", **NARROW["rdafnet_ms"]), str(tmp_path / "ss.pth"))
    # a narrow file into the paper-size model: shape mismatches, named
    with pytest.raises(CheckpointError, match=r"shape mismatch .*first\.0\.weight: checkpoint \(4, 3, 7, 7\)"):
        load_pretrained(create("rdafnet_ss"), str(tmp_path / "ss.pth"))


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip(tmp_path, name):
    src = _perturb(create(name, **NARROW[name]))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    torch.manual_seed(7)
    dst = create(name, **NARROW[name])
    dst.load_state_dict(torch.load(tmp_path / "w.pth", weights_only=True), strict=True)
    x = rand_image(2, 8, 10)
    with torch.no_grad():
        for a, b in zip(images(dst(x)), images(src(x))):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- accelerate (no deblurfast layer: memory format only)

@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("backend", ["cpu,reference", "triton,reference"])
def test_accelerate_leaves_outputs_unchanged(name, backend):
    model = _perturb(create(name, **NARROW[name]))
    assert accelerable_layers(model) == []  # plain PyTorch: nothing to switch
    params = dict(model.named_parameters())
    x = rand_image(2, 8, 12)
    with torch.no_grad():
        before = images(model(x))
        deblurfast.accelerate(model, backend=backend, channels_last=False)
        same = images(model(x))
        deblurfast.accelerate(model, backend=backend)  # channels_last: other conv kernels, same math
        cl = images(model(x))
        deblurfast.deaccelerate(model)
        after = images(model(x))
    assert all(p is params[k] for k, p in model.named_parameters())
    for b, s, c, a in zip(before, same, cl, after):
        assert torch.equal(s, b) and torch.equal(a, b)
        assert_close(c, b, what=f"{name} channels_last")


def _loss(out, target):
    """Spec §7 without the VGG term: L1 + 0.1 * L1 of the rfft2 modulus, summed over the outputs."""
    total = 0
    for y in images(out):
        total = total + F.l1_loss(y, target) + 0.1 * (torch.fft.rfft2(y) - torch.fft.rfft2(target)).abs().mean()
    return total


@pytest.mark.parametrize("name", VARIANTS)
def test_training_parity_20_adam_steps_channels_last(name):
    """RDAFNet has no deblurfast layer, so what accelerate changes is the memory format: every
    convolution runs channels_last kernels (other arithmetic). 20 steps must track the reference."""
    ref = create(name, **NARROW[name])
    acc = copy.deepcopy(ref)
    deblurfast.accelerate(acc, backend="cpu,reference", channels_last=True)
    convs = [m.weight for m in acc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    g = torch.Generator().manual_seed(5)
    data = [(torch.rand(2, 3, 12, 12, generator=g) * 2 - 1, torch.rand(2, 3, 12, 12, generator=g) * 2 - 1)
            for _ in range(4)]

    def loss_of(model, step):
        x, t = data[step % len(data)]
        return _loss(model(x), t)

    assert_training_parity(ref, acc, loss_of, lr=1e-4)  # the authors' Adam (spec §7)
    for (k, p), q in zip(ref.named_parameters(), acc.parameters()):
        # The bias of a conv followed by InstanceNorm has a zero gradient up to rounding noise, which
        # Adam normalises into lr-sized steps of random sign: not comparable between two kernels.
        if not (".conv_" in k and k.endswith(".0.bias")):
            torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=k)


# ---------------------------------------------------------------- deblurfast.deblur (spec §5)

@pytest.mark.parametrize("name", VARIANTS)
def test_deblur_odd_size_uint8(name):
    model = _perturb(create(name, **NARROW[name]))
    h, w = 11, 13
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = deblurfast.deblur(model, rgb)
    assert isinstance(out, np.ndarray) and out.shape == rgb.shape and out.dtype == np.uint8
    # by hand, as test_deblur_NR.py does: [-1, 1], reflect-pad bottom/right to even, crop, (y+1)/2, round
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    x = F.pad(x, (0, 1, 0, 1), mode="reflect")
    with torch.no_grad():
        y = images(model.eval()(x))[-1][..., :h, :w]
    expected = (((y + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out, expected)


# ---------------------------------------------------------------- paper size

@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_paper_size_256(name):
    model = create(name).eval()
    x = rand_image(1, 256, 256)
    with torch.no_grad():
        out = images(model(x))
    assert len(out) == (1 if name == "rdafnet_ss" else 3)
    for y in out:
        assert y.shape == (1, 3, 256, 256) and torch.isfinite(y).all() and y.abs().max() <= 1
