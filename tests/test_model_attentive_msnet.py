"""attentive_msnet (Xu et al., RDAN): structure, the spec's exact arithmetic, plumbing.
Spec: shared/specs/models/attentive_msnet.md. The TF checkpoint converter is tested in test_convert.py."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblurfast
from deblurfast.train.losses import build_loss
from deblurfast.engine import accelerable_layers
from deblurfast.models import IOConvention, create, load_pretrained, num_parameters
from deblurfast.models.attentive_msnet import (
    RDAB,
    AttentiveMSNet,
    SameConv2d,
    official_test,
    _legacy_axis,
    tf_legacy_resize,
    tf_same_pads,
)
from helpers import assert_training_parity

# Narrow and shallow: r = 8 // 4 = 2, 16 // 4 = 4, 32 // 4 = 8.
NARROW = dict(widths=(8, 16, 32), reduction=4, num_blocks=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def narrow(**kw):
    return create("attentive_msnet", **{**NARROW, **kw})


# ----------------------------------------------------------------------------------------------
# Structure at paper size
# ----------------------------------------------------------------------------------------------

def expected_state_shapes():
    """The spec's §4 tables, in its recommended (forward) order."""
    keys = []

    def plain(name, w, b):
        keys.extend([(f"{name}.weight", w), (f"{name}.bias", b)])

    def rdab(name, f):
        r = f // 16
        for sub, (o, i, k) in [("conv1", (f, f, 5)), ("conv2", (f, f, 5)), ("blur_attention.conv1", (r, f, 1)),
                               ("blur_attention.conv2", (1, r, 1)), ("channel_attention.conv1", (r, f, 1)),
                               ("channel_attention.conv2", (f, r, 1))]:
            plain(f"{name}.{sub}", (o, i, k, k), (o,))

    for level, (cin, f) in enumerate(((6, 32), (32, 64), (64, 128)), 1):
        plain(f"enc{level}_1", (f, cin, 5, 5), (f,))
        for i in (2, 3, 4):
            rdab(f"enc{level}_{i}", f)
    for level, f in ((3, 128), (2, 64), (1, 32)):
        if level < 3:  # a ConvTranspose2d from the level below: [in, out, kh, kw]
            plain(f"dec{level}_4", (2 * f, f, 4, 4), (f,))
        for i in (3, 2, 1):
            rdab(f"dec{level}_{i}", f)
    plain("dec1_0", (3, 32, 5, 5), (3,))
    return keys


def test_state_dict_keys_shapes_order_and_parameter_count():
    m = create("attentive_msnet")
    sd = m.state_dict()
    expected = expected_state_shapes()
    assert len(expected) == 228
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    assert num_parameters(m) == 6_907_057
    assert [num_parameters(getattr(m, b)) for b in ("enc1_2", "enc2_2", "enc3_2")] == [51_495, 205_773, 822_681]
    assert isinstance(m.dec2_4, torch.nn.ConvTranspose2d) and m.dec2_4.stride == (2, 2) and m.dec2_4.padding == (1, 1)
    # one set of weights shared by the three scales: no per-scale copies
    assert len(list(m.parameters())) == 228


def test_registration_and_conventions():
    m = create("attentive_msnet", **NARROW)
    assert isinstance(m, AttentiveMSNet) and m.model_name == "attentive_msnet"
    assert m.io == IOConvention(channel_order="RGB", value_range=(0.0, 1.0), multiple=16, pad_mode="replicate",
                                clamp=True, output=-1, min_size=16, receptive_field=1276,
                                global_context="channel attention gates on the mean over the whole image")
    assert "Attentive deep network" in deblurfast.models.model_entry("attentive_msnet").paper
    # nothing accelerable yet (plain PyTorch layers only)
    assert accelerable_layers(m) == []


def test_initialisation_is_xavier_uniform_with_zero_biases():
    m = create("attentive_msnet")
    w = m.enc2_1.weight  # fan_in 32*25, fan_out 64*25
    bound = (6 / (25 * (32 + 64))) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert all(p.abs().sum() == 0 for n, p in m.named_parameters() if n.endswith("bias"))


@pytest.mark.parametrize("flag", ["bad_resize", "bad_padding", "bad_attention", "bad_reduction"])
def test_invalid_flags(flag):
    kw = {"bad_resize": dict(resize="bicubic"), "bad_padding": dict(padding="valid"),
          "bad_attention": dict(attention="both"), "bad_reduction": dict(reduction=16)}[flag]
    with pytest.raises(ValueError, match="must be"):
        narrow(**kw)


# ----------------------------------------------------------------------------------------------
# Forward shapes and the size multiple
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    {}, dict(resize="torch_bilinear"), dict(padding="symmetric"), dict(attention="parallel"),
    dict(detach_previous=False), dict(num_blocks=2), dict(in_channels=1),
])
def test_forward_shapes(variant):
    m = narrow(**variant)
    c = variant.get("in_channels", 3)
    x = torch.rand(2, c, 32, 48)
    with torch.no_grad():
        out = m(x)
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(2, c, 8, 12), (2, c, 16, 24), (2, c, 32, 48)]
    assert all(torch.isfinite(o).all() for o in out)


def test_num_blocks_names_follow_the_pattern():
    keys = {k.rsplit(".", 2)[0] for k in narrow(num_blocks=2).state_dict()}
    assert {"enc1_2", "enc1_3", "dec3_2", "dec3_1", "dec1_2", "dec1_1"} <= {k.split(".")[0] for k in keys}
    assert isinstance(narrow(num_blocks=2).dec2_3, torch.nn.ConvTranspose2d)  # dec?_{num_blocks+1}


def test_size_multiple():
    m = narrow()
    assert m.size_multiple == 16
    with torch.no_grad():
        for h, w in [(16, 16), (48, 32)]:
            assert m(torch.rand(1, 3, h, w))[-1].shape == (1, 3, h, w)
        for h, w in [(24, 32), (32, 40), (8, 16)]:
            with pytest.raises(ValueError, match="multiples of 16"):
                m(torch.rand(1, 3, h, w))
        two = narrow(num_scales=2)
        assert two.size_multiple == 8
        assert [o.shape[-2:] for o in two(torch.rand(1, 3, 24, 40))] == [(12, 20), (24, 40)]
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        m(torch.rand(3, 16, 16))


# ----------------------------------------------------------------------------------------------
# The spec's exact arithmetic, checked independently
# ----------------------------------------------------------------------------------------------

def legacy_resize_oracle(v: np.ndarray, n_out: int) -> np.ndarray:
    """1-D TF1 legacy bilinear, a loop over the spec's formula in float32."""
    n_in = len(v)
    scale = np.float32(n_in) / np.float32(n_out)
    out = np.zeros(n_out, dtype=np.float32)
    for j in range(n_out):
        src = np.float32(j) * scale
        j0 = int(np.floor(src))
        j1 = min(j0 + 1, n_in - 1)
        lam = np.float32(src - np.float32(j0))
        out[j] = v[j0] + (v[j1] - v[j0]) * lam
    return out


def test_tf_legacy_resize_spec_examples():
    v = torch.tensor([0.0, 1.0, 2.0, 3.0])
    up = tf_legacy_resize(v.view(1, 4).expand(2, 4), (2, 8))[0]
    assert up.tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    assert F.interpolate(v.view(1, 1, 1, 4), size=(1, 8), mode="bilinear", align_corners=False).flatten().tolist() \
        == [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]  # why the model needs its own resize
    x = torch.rand(2, 3, 16, 24)
    assert torch.equal(tf_legacy_resize(x, (4, 6)), x[..., ::4, ::4])  # decimation, no averaging
    assert torch.equal(tf_legacy_resize(x, (8, 12)), x[..., ::2, ::2])
    assert tf_legacy_resize(x, (16, 24)) is x
    up = tf_legacy_resize(x, (32, 48))
    assert torch.equal(up[..., ::2, ::2], x)
    torch.testing.assert_close(up[..., 1::2, 0::2][..., :-1, :], (x[..., :-1, :] + x[..., 1:, :]) / 2)
    assert torch.equal(up[..., -1, ::2], x[..., -1, :])  # last row repeated


@pytest.mark.parametrize("n_in,n_out", [(5, 3), (7, 3), (3, 7), (10, 4), (6, 9)])
def test_tf_legacy_resize_matches_the_formula(n_in, n_out):
    rng = np.random.default_rng(n_in * 10 + n_out)
    img = rng.standard_normal((n_in, n_in + 1)).astype(np.float32)
    got = tf_legacy_resize(torch.from_numpy(img), (n_out, n_out + 2)).numpy()
    rows = np.stack([legacy_resize_oracle(r, n_out + 2) for r in img])  # width first, as TF
    expected = np.stack([legacy_resize_oracle(c, n_out) for c in rows.T]).T
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_tf_legacy_resize_indices_keep_tfs_float32_arithmetic():
    """The indices are now computed by torch on the device (they were built in numpy and copied in
    every forward, which a CUDA graph capture refuses: issue 12 item 13, tested in
    test_engine_graphs.py); they stay those of TF's float32 arithmetic at the size pairs the
    pyramid meets, up to 4K."""
    lengths = list(range(1, 70)) + [180, 270, 320, 360, 480, 540, 640, 720, 960, 1080, 1280, 1920, 2160, 3840]
    for n_in in lengths:
        for n_out in sorted({max(1, n_in // 4), max(1, n_in // 2), 2 * n_in, 3, 7, 16}):
            scale = np.float32(n_in) / np.float32(n_out)
            src = np.arange(n_out, dtype=np.float32) * scale
            want_j0 = np.floor(src).astype(np.int64)
            want_lam = src - np.floor(src)
            j0, j1, lam = _legacy_axis(n_in, n_out, "cpu")
            assert j0.dtype == torch.int64 and lam.dtype == torch.float32
            assert np.array_equal(j0.numpy(), want_j0), (n_in, n_out)
            assert np.array_equal(j1.numpy(), np.minimum(want_j0 + 1, n_in - 1)), (n_in, n_out)
            assert np.array_equal(lam.numpy(), want_lam), (n_in, n_out)


def test_tf_same_padding_of_the_stride_2_convs():
    assert tf_same_pads(6, 5, 2) == (1, 2) and tf_same_pads(7, 5, 2) == (2, 2)
    assert tf_same_pads(6, 5, 1) == (2, 2) and tf_same_pads(9, 1, 1) == (0, 0) and tf_same_pads(8, 4, 2) == (1, 1)
    conv = SameConv2d(2, 3, 5, stride=2)
    for h, w in [(6, 6), (7, 6)]:
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        wt, b = conv.weight.detach().double(), conv.bias.detach().double()
        ho, wo = -(-h // 2), -(-w // 2)
        pt, pl = tf_same_pads(h, 5, 2)[0], tf_same_pads(w, 5, 2)[0]
        expected = torch.zeros(1, 3, ho, wo, dtype=torch.float64)
        for o in range(3):
            for i in range(ho):
                for j in range(wo):
                    acc = b[o].item()
                    for c in range(2):
                        for u in range(5):
                            for v in range(5):
                                y, xx = 2 * i + u - pt, 2 * j + v - pl
                                if 0 <= y < h and 0 <= xx < w:
                                    acc += wt[o, c, u, v].item() * x[0, c, y, xx].item()
                    expected[0, o, i, j] = acc
        got = conv.double()(x)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        conv.float()
    # 6x6: top/left pad 1 (not 2): the symmetric variant samples other pixels
    x = torch.randn(1, 2, 6, 6)
    sym = SameConv2d(2, 3, 5, stride=2, tf_padding="symmetric")
    sym.load_state_dict(conv.state_dict())
    assert not torch.allclose(sym(x), conv(x))


def test_transposed_conv_is_the_adjoint_of_a_tf_same_conv():
    """slim conv2d_transpose(4, stride 2, SAME) = adjoint of the 4x4 stride-2 SAME conv on 2n (pads 1/1),
    with the TF kernel [kh, kw, out, in] -> PyTorch [in, out, kh, kw] by permute(3, 2, 0, 1)."""
    m = narrow()  # num_blocks=1: dec2_2 is the ConvTranspose2d(32 -> 16)
    tf_kernel = m.dec2_2.weight.detach().permute(2, 3, 1, 0)  # back to TF [kh, kw, out=16, in=32]
    n = 5
    d = torch.randn(1, 32, n, n)  # the transposed conv's input
    z = torch.zeros(1, 16, 2 * n, 2 * n, requires_grad=True)
    # the TF conv it is the adjoint of: 2n map, filter HWIO [4, 4, 16, 32], SAME pads (1, 1), stride 2
    conv = F.conv2d(F.pad(z, (1, 1, 1, 1)), tf_kernel.permute(3, 2, 0, 1), stride=2)
    assert conv.shape == d.shape
    (adjoint,) = torch.autograd.grad(conv, z, d)
    with torch.no_grad():
        got = m.dec2_2(d) - m.dec2_2.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(got, adjoint, rtol=1e-5, atol=1e-5)


def test_rdab_arithmetic():
    torch.manual_seed(1)
    for attention in ("sequential", "parallel"):
        blk = RDAB(16, kernel_size=3, reduction=4, attention=attention)
        for p in blk.parameters():
            torch.nn.init.normal_(p, std=0.3)
        t = torch.randn(2, 16, 6, 5)
        P = dict(blk.named_parameters())

        def conv(x, name, pad=0):
            return F.conv2d(x, P[f"{name}.weight"], P[f"{name}.bias"], padding=pad)

        u = conv(torch.relu(conv(t, "conv1", 1)), "conv2", 1)
        a = torch.sigmoid(conv(torch.relu(conv(u, "blur_attention.conv1")), "blur_attention.conv2"))
        assert a.shape == (2, 1, 6, 5)
        us = u * a
        src = us if attention == "sequential" else u
        q = src.sum(dim=(2, 3), keepdim=True) / 30
        c = torch.sigmoid(conv(torch.relu(conv(q, "channel_attention.conv1")), "channel_attention.conv2"))
        expected = us * c + t
        torch.testing.assert_close(blk(t), expected, rtol=1e-5, atol=1e-6)
    seq = RDAB(16, 3, 4, "sequential")
    par = RDAB(16, 3, 4, "parallel")
    for p in seq.parameters():
        torch.nn.init.normal_(p, std=0.3)
    par.load_state_dict(seq.state_dict())
    t = torch.randn(1, 16, 6, 6)
    assert not torch.allclose(seq(t), par(t))


def _capture_scale_inputs(m, x):
    seen = []
    handle = m.enc1_1.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        out = m(x)
    finally:
        handle.remove()
    return seen, out


def test_multiscale_wrapper():
    m = narrow()
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    seen, out = _capture_scale_inputs(m, x)
    assert [tuple(z.shape) for z in seen] == [(2, 6, 8, 12), (2, 6, 16, 24), (2, 6, 32, 48)]
    xd = x.detach()
    assert torch.equal(seen[0][:, :3], xd[..., ::4, ::4]) and torch.equal(seen[0][:, 3:], xd[..., ::4, ::4])
    assert torch.equal(seen[1][:, :3], xd[..., ::2, ::2])
    assert torch.equal(seen[1][:, 3:], tf_legacy_resize(out[0].detach(), (16, 24)))
    assert torch.equal(seen[2][:, :3], xd) and torch.equal(seen[2][:, 3:], tf_legacy_resize(out[1].detach(), (32, 48)))
    # the previous estimate enters without a gradient path to the previous level (stop_gradient)
    assert torch.autograd.grad(seen[1][:, 3:].sum(), out[0], allow_unused=True) == (None,)
    assert torch.autograd.grad(seen[1][:, :3].sum(), x)[0].abs().sum() == 16 * 24 * 2 * 3  # b_1 picks pixels of x
    with torch.no_grad():  # the same weights at every level
        for z, o in zip(seen, out):
            assert torch.equal(m.scale_forward(z), o)
    seen, out = _capture_scale_inputs(narrow(detach_previous=False), x)
    assert torch.autograd.grad(seen[1][:, 3:].sum(), out[0])[0].abs().sum() > 0


def test_detach_previous_cuts_the_gradient_between_levels():
    x = torch.rand(1, 3, 16, 16)
    grads = {}
    for detach in (True, False):
        m = narrow(detach_previous=detach)
        torch.manual_seed(3)
        m.reset_parameters()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
        out = m(x)
        out[-1].square().mean().backward()
        grads[detach] = m.enc1_1.weight.grad.clone()
        # only the finest level's loss: with detach, the gradient is that of one scale_forward call
        if detach:
            m.zero_grad()
            z = torch.cat([x, tf_legacy_resize(out[1].detach(), (16, 16))], 1)
            m.scale_forward(z).square().mean().backward()
            torch.testing.assert_close(m.enc1_1.weight.grad, grads[True])
    assert not torch.allclose(grads[True], grads[False])


# ----------------------------------------------------------------------------------------------
# Checkpoints, accelerate, training parity, deblur
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("container", ["converted_safetensors", "bare_torch"])
def test_checkpoint_containers(tmp_path, container):
    """The authors' weights reach PyTorch as a flat state_dict converted from their TF bundle
    (deblurfast convert, test_convert.py writes and converts a real bundle); both file kinds load."""
    src = narrow()
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sd = src.state_dict()
    if container == "converted_safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "rdan.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"tf_step": "675000"})
    else:
        path = tmp_path / "rdan.pth"
        torch.save(sd, path)
    dst = load_pretrained(narrow(), str(path), strict=True)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_state_dict_round_trip(tmp_path):
    a = narrow()
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(a.state_dict(), tmp_path / "w.pth")
    b = narrow()
    b.load_state_dict(torch.load(tmp_path / "w.pth", weights_only=True), strict=True)
    x = torch.rand(1, 3, 16, 32)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))


@pytest.mark.parametrize("backend", ["cpu,reference", "triton,reference"])
def test_accelerate_leaves_outputs_identical(backend):
    """No accelerable layer: accelerate() only switches the memory format; outputs stay the same."""
    m = narrow()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    params = dict(m.named_parameters())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        deblurfast.accelerate(m, backend=backend, channels_last=False)
        same = m(x)
        deblurfast.accelerate(m, backend=backend, channels_last=True)
        last = m(x)
    assert all(torch.equal(a, b) for a, b in zip(ref, same))
    for a, b in zip(ref, last):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    assert all(p is params[n] for n, p in m.named_parameters())
    deblurfast.deaccelerate(m)
    assert m.enc1_1.weight.is_contiguous()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ref, m(x)))


def test_training_parity_20_steps():
    torch.manual_seed(5)
    ref = narrow()
    acc = deblurfast.accelerate(copy.deepcopy(ref), backend="cpu,reference", channels_last=True)
    g = torch.Generator().manual_seed(6)
    blurred, sharp = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    loss = build_loss("attentive_msnet")
    assert_training_parity(ref, acc, lambda m, step: loss(m, {"blur": blurred, "sharp": sharp})[0])


def test_deblur_odd_size_uint8():
    m = narrow()
    rgb = np.random.default_rng(0).integers(0, 256, (21, 35, 3), dtype=np.uint8)
    out = deblurfast.deblur(m, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # by hand: replicate-pad to 32x48, last output, crop, clamp, round
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = m(F.pad(x, (0, 13, 0, 11), mode="replicate"))[-1][..., :21, :35].clamp(0, 1)
    assert np.array_equal(out, (y[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def test_official_test_protocol():
    m = narrow()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    torch.nn.init.constant_(m.dec1_0.bias, 0.5)  # outputs mid-range, not clamped away
    rng = np.random.default_rng(1)

    def run(canvas_hw, image):
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        h, w = image.shape[:2]
        x = F.pad(x, (0, canvas_hw[1] - w, 0, canvas_hw[0] - h), mode="replicate")
        with torch.no_grad():
            y = m(x)[-1][0, :, :h, :w].clamp(0, 1) * 255
        return y.to(torch.uint8).permute(1, 2, 0).numpy()  # truncation

    portrait = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)  # transposed to 20x40 inside a 32x48 canvas
    got = official_test(m, portrait, height=32, width=48)
    assert got.shape == portrait.shape and got.dtype == np.uint8
    assert np.array_equal(got, run((32, 48), portrait.transpose(1, 0, 2)).transpose(1, 0, 2))
    x = torch.from_numpy(portrait.transpose(1, 0, 2).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = m(F.pad(x, (0, 8, 0, 12), mode="replicate"))[-1][0, :, :20, :40].clamp(0, 1) * 255
    assert 10 < y.mean() < 245
    floor = y.floor().to(torch.uint8).permute(2, 1, 0).numpy()
    rounded = y.round().to(torch.uint8).permute(2, 1, 0).numpy()
    assert np.array_equal(got, floor) and not np.array_equal(got, rounded)  # truncated, as the authors

    # larger than the canvas: fitted by min(H/h, W/w) with int() sizes, resized back (resize_fn pluggable)
    calls = []

    def nearest(img, size):
        calls.append((img.shape[:2], tuple(size)))
        ys = np.arange(size[0]) * img.shape[0] // size[0]
        xs = np.arange(size[1]) * img.shape[1] // size[1]
        return img[ys][:, xs]

    big = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = official_test(m, big, height=32, width=48, resize_fn=nearest)
    scale = min(32 / 50, 48 / 70)
    new = (int(50 * scale), int(70 * scale))
    assert calls == [((50, 70), new), (new, (50, 70))] and got.shape == big.shape
    assert np.array_equal(got, nearest(run((32, 48), nearest(big, new)), (50, 70)))
    with pytest.raises(ValueError, match="uint8"):
        official_test(m, big.astype(np.float32))


@pytest.mark.slow
def test_paper_size_256():
    m = create("attentive_msnet").eval()
    assert num_parameters(m) == 6_907_057
    with torch.no_grad():
        out = m(torch.rand(1, 3, 256, 256))
    assert [tuple(o.shape) for o in out] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    assert all(torch.isfinite(o).all() for o in out)


def test_level_sizes_round_as_python_in_integers():
    # Integer arithmetic (symbolic sizes export), equal to Python's round(H * 0.5**k), ties to even.
    from deblurfast.models.attentive_msnet import _round_halved

    for n in range(0, 600):
        for k in range(5):
            assert _round_halved(n, k) == round(n * 0.5**k), (n, k)
    assert narrow(num_scales=3).level_sizes(36, 20) == [(9, 5), (18, 10), (36, 20)]
