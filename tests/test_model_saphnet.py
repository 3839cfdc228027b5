"""SAPHNet (Suin et al., CVPR 2020; shared/specs/models/saphnet.md): state_dict and
parameter count at paper size, shapes, the spec's arithmetic checked by hand,
checkpoint files, accelerated vs reference (forward and 20 training steps), deblur."""

import copy
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deblurfast
from deblurfast.engine import accelerable_layers
from deblurfast.dispatch import OPS
from deblurfast.models import CheckpointError, IOConvention, create, load_pretrained, num_parameters
from deblurfast.models.saphnet import SAPHNet
from helpers import assert_training_parity, write_checkpoint

TINY = dict(channels=16, attention_maps=4, num_blocks=1)
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PARAMS_B = 15_538_686  # with learnable offsets (Table 1, variant b), defaults
PARAMS_A = 14_500_986  # without (variant a)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _need_triton():
    if TRITON_DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("Triton on CPU needs the interpreter (TRITON_INTERPRET=1, set by conftest.py)")


# --------------------------------------------------------------------------------------------------
# state_dict and parameter count at paper size


def expected_state(offsets=True, C=128, C2=32, N=3, M=2, k=5, levels=3):
    """{key: shape} written from the spec's layer list (and deblurfast's naming)."""
    out = {}

    def conv(name, cout, cin, kh):
        out[f"{name}.weight"] = (cout, cin, kh, kh)
        out[f"{name}.bias"] = (cout,)

    def block(p, cross):
        conv(f"{p}.conv1", C, C, 3)
        conv(f"{p}.conv2", C, C, 3)
        a = f"{p}.cam.attention"
        conv(f"{a}.mask_conv", 1, C, 1)
        if cross:
            conv(f"{a}.enc_mask_conv", 1, C, 1)
        conv(f"{a}.key_conv", C2, C, 1)
        conv(f"{a}.query_conv", C2, C, 1)
        out[f"{a}.gate_fc.weight"], out[f"{a}.gate_fc.bias"] = (C, C), (C,)
        d = f"{p}.cam.pdf"
        out[f"{d}.weight"], out[f"{d}.bias"] = (C, C, k, k), (C,)
        conv(f"{d}.kernel_conv", k * k, C, 3)
        if offsets:
            conv(f"{d}.offset_conv", 2 * k * k, C, 3)
        conv(f"{p}.cam.fusion", 1, C, 3)

    widths = [C >> (M - i) for i in range(M + 1)]  # 32, 64, 128
    for lv in range(levels):
        p = f"levels.{lv}"
        conv(f"{p}.encoder.stem.0", widths[0], 3, 3)
        for i in range(M):
            conv(f"{p}.encoder.stem.{i + 1}", widths[i + 1], widths[i], 3)
        for i in range(N):
            block(f"{p}.encoder.blocks.{i}", cross=False)
            block(f"{p}.decoder.blocks.{i}", cross=True)
        for i in range(M):  # ConvTranspose2d weights are (Cin, Cout, 4, 4)
            out[f"{p}.decoder.up.{i}.weight"] = (widths[M - i], widths[M - i - 1], 4, 4)
            out[f"{p}.decoder.up.{i}.bias"] = (widths[M - i - 1],)
        conv(f"{p}.decoder.out", 3, widths[0], 3)
        if lv < levels - 1:  # CLA at every level but the bottom one
            conv(f"{p}.cla.mask_conv", 1, C, 1)
            conv(f"{p}.cla.key_conv", C2, C, 1)
            conv(f"{p}.cla.query_conv", C2, C, 1)
            out[f"{p}.cla.gate_fc.weight"], out[f"{p}.cla.gate_fc.bias"] = (C, C), (C,)
    return out


@pytest.mark.parametrize("offsets,count", [(True, PARAMS_B), (False, PARAMS_A)], ids=["b_offsets", "a_no_offsets"])
def test_state_dict_and_parameter_count_paper_size(offsets, count):
    model = create("saphnet", offsets=offsets)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state(offsets=offsets)
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert sum(math.prod(s) for s in expected.values()) == count  # the count follows from the spec's layers
    assert model.num_parameters() == num_parameters(model) == count
    print(f"SAPHNet ({'b' if offsets else 'a'}) parameters: {model.num_parameters():,}")
    if offsets:  # the spec: "about 15-20 M with these defaults"
        assert 15_000_000 <= count <= 20_000_000
    # the three levels are independent (no weight sharing) and the top level is levels.0
    assert len(model.levels) == 3 and model.levels[2].cla is None and model.levels[0].cla is not None
    assert model.levels[0].encoder.blocks[0].conv1.weight is not model.levels[1].encoder.blocks[0].conv1.weight
    pdf = model.levels[0].encoder.blocks[0].cam.pdf
    assert pdf.kernel_size == 5 and pdf.max_offset == 4.0 and (pdf.offset_conv is not None) == offsets
    assert model.levels[0].encoder.negative_slope == 0.2
    assert model.levels[0].encoder.stem[1].stride == (2, 2) and model.levels[0].encoder.stem[0].stride == (1, 1)


def test_registry_and_io_convention():
    assert "saphnet" in deblurfast.models.list_models()
    m = create("saphnet", **TINY)
    assert isinstance(m, SAPHNet) and m.model_name == "saphnet"
    assert m.io == IOConvention(channel_order="RGB", value_range=(0.0, 1.0), multiple=16, pad_mode="reflect",
                                clamp=True, output=None, min_size=16, receptive_field=600,
                                global_context=m.io.global_context)
    assert "efficient attention" in m.io.global_context
    with pytest.raises(ValueError, match="channels=18 must be divisible by 2\\*\\*num_downsamplings=4"):
        SAPHNet(channels=18)
    with pytest.raises(ValueError, match="levels must be an int >= 1"):
        SAPHNet(levels=0)


# --------------------------------------------------------------------------------------------------
# forward shapes


@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
def test_forward_shapes(offsets):
    m = create("saphnet", offsets=offsets, **TINY)
    assert m.size_multiple_hw == (8, 8) and m.size_multiple == 8
    for shape in [(2, 3, 32, 48), (1, 3, 16, 8)]:
        x = torch.rand(shape)
        with torch.no_grad():
            y = m(x)
            outs = m(x, return_all=True)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert isinstance(outs, list) and len(outs) == 3 and all(o.shape == x.shape for o in outs)
        assert torch.equal(outs[-1], y)
    for bad in [(1, 3, 20, 16), (1, 3, 16, 12)]:  # not multiples of 8
        with pytest.raises(ValueError, match="multiples of \\(8, 8\\)"):
            m(torch.rand(bad))
    with pytest.raises(ValueError, match="x must be \\(N, 3, H, W\\)"):
        m(torch.rand(1, 4, 16, 16))


@pytest.mark.parametrize("config,multiple,shape", [
    (dict(levels=1), (4, 4), (1, 3, 12, 20)),
    (dict(levels=2), (8, 4), (1, 3, 16, 12)),
    (dict(levels=4), (16, 8), (1, 3, 32, 24)),
    (dict(num_downsamplings=1), (4, 4), (1, 3, 12, 20)),
    (dict(kernel_size=3, max_offset=2.0), (8, 8), (1, 3, 16, 24)),
])
def test_forward_shapes_other_sizes(config, multiple, shape):
    m = create("saphnet", **{**TINY, **config})
    assert m.size_multiple_hw == multiple
    with torch.no_grad():
        outs = m(torch.rand(shape), return_all=True)
    assert len(outs) == m.num_levels and all(o.shape == shape for o in outs)


# --------------------------------------------------------------------------------------------------
# the spec's arithmetic, by hand (float64, independent of deblurfast's ops)


def attention_by_hand(value, key, query, gate):
    """Eq. 10: gate * [value softmax_positions(key)^T] softmax_maps(query); (N, C, H, W)."""
    N, C, H, W = query.shape[0], value.shape[1], *query.shape[2:]
    v, k, q = value.flatten(2), key.flatten(2), query.flatten(2)
    ctx = torch.einsum("ncl,nml->ncm", v, k.softmax(dim=2))
    return (torch.einsum("ncm,nml->ncl", ctx, q.softmax(dim=1)) * gate[:, :, None]).reshape(N, C, H, W)


def deform_by_hand(x, offset, weight, bias, mask):
    """Eq. 11 with bilinear sampling (zero outside the image) by grid_sample, padding k//2."""
    N, C, H, W = x.shape
    k = weight.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=x.dtype), torch.arange(W, dtype=x.dtype), indexing="ij")
    out = bias.reshape(1, -1, 1, 1).expand(N, -1, H, W).clone()
    for i in range(k):
        for j in range(k):
            t = i * k + j
            dy = offset[:, 2 * t] if offset is not None else 0.0
            dx = offset[:, 2 * t + 1] if offset is not None else 0.0
            py, px = ys + (i - k // 2) + dy, xs + (j - k // 2) + dx
            grid = torch.stack([2 * px / (W - 1) - 1, 2 * py / (H - 1) - 1], dim=-1).expand(N, H, W, 2)
            s = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out = out + torch.einsum("oc,nchw->nohw", weight[:, :, i, j], s * mask[:, t:t + 1])
    return out


def cam_by_hand(cam, x, enc=None):
    a, p = cam.attention, cam.pdf
    conv = lambda c, t: F.conv2d(t, c.weight, c.bias, padding=c.padding)  # noqa: E731
    xm = x * torch.sigmoid(conv(a.mask_conv, x))
    value = xm if enc is None else enc * torch.sigmoid(conv(a.enc_mask_conv, enc))
    gate = torch.sigmoid(F.linear(xm.mean(dim=(2, 3)), a.gate_fc.weight, a.gate_fc.bias))
    y_att = attention_by_hand(value, conv(a.key_conv, value), conv(a.query_conv, xm), gate) / a.maps
    V = conv(p.kernel_conv, x)
    delta = 4.0 * torch.tanh(conv(p.offset_conv, x)) if p.offset_conv is not None else None
    y_dyn = deform_by_hand(x, delta, p.weight, p.bias, V)
    m = torch.sigmoid(conv(cam.fusion, x))
    return m * y_att + (1 - m) * y_dyn, delta


def _randomize_offsets(model, std=0.3):
    """The offset convs start at zero; give them weights so that offsets matter (some saturate at ±4)."""
    g = torch.Generator().manual_seed(3)
    for mod in model.modules():
        if getattr(mod, "offset_conv", None) is not None:
            with torch.no_grad():
                mod.offset_conv.weight.copy_(torch.randn(mod.offset_conv.weight.shape, generator=g) * std)
                mod.offset_conv.bias.copy_(torch.randn(mod.offset_conv.bias.shape, generator=g))


@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_content_aware_module_by_hand(offsets, cross):
    m = create("saphnet", offsets=offsets, **TINY).double()
    _randomize_offsets(m)
    block = (m.levels[0].decoder if cross else m.levels[0].encoder).blocks[0]
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    enc = torch.randn(2, 16, 6, 7, dtype=torch.float64) if cross else None
    expected, delta = cam_by_hand(block.cam, x, enc)
    torch.testing.assert_close(block.cam(x, enc), expected, rtol=1e-10, atol=1e-10)
    if offsets:  # bounded by Δmax = 4 and used: some near the bound, none beyond
        assert delta.abs().max() <= 4.0 and delta.abs().max() > 3.0
    # the residual block: x + conv2(CAM(lrelu(conv1(x), 0.2)))
    h = F.leaky_relu(F.conv2d(x, block.conv1.weight, block.conv1.bias, padding=1), 0.2)
    want = x + F.conv2d(cam_by_hand(block.cam, h, enc)[0], block.conv2.weight, block.conv2.bias, padding=1)
    torch.testing.assert_close(block(x, enc), want, rtol=1e-10, atol=1e-10)


def test_variant_a_calls_the_op_without_offsets(monkeypatch):
    import deblurfast.nn.deform_conv as dc

    seen = []
    real = dc.deform_conv2d
    monkeypatch.setattr(dc, "deform_conv2d", lambda x, offset, *a, **k: seen.append(offset) or real(x, offset, *a, **k))
    with torch.no_grad():
        create("saphnet", offsets=False, **TINY)(torch.rand(1, 3, 16, 16))
        assert len(seen) == 6 and all(o is None for o in seen)  # 3 levels x (1 encoder + 1 decoder block)
        seen.clear()
        create("saphnet", **TINY)(torch.rand(1, 3, 16, 16))
        assert len(seen) == 6 and all(o is not None and o.shape[1] == 50 for o in seen)


def test_cross_level_attention_by_hand():
    m = create("saphnet", **TINY).double()
    cla = m.levels[0].cla
    f, g = torch.randn(2, 16, 5, 6, dtype=torch.float64), torch.randn(2, 16, 5, 6, dtype=torch.float64)
    value = g * torch.sigmoid(F.conv2d(g, cla.mask_conv.weight, cla.mask_conv.bias))
    key = F.conv2d(value, cla.key_conv.weight, cla.key_conv.bias)
    query = F.conv2d(f, cla.query_conv.weight, cla.query_conv.bias)  # no spatial mask on f
    gate = torch.sigmoid(F.linear(f.mean(dim=(2, 3)), cla.gate_fc.weight, cla.gate_fc.bias))
    want = f + attention_by_hand(value, key, query, gate) / 4
    torch.testing.assert_close(cla(f, g), want, rtol=1e-10, atol=1e-10)


def test_decoder_attends_to_the_mirrored_encoder_block():
    m = create("saphnet", **{**TINY, "num_blocks": 3}).double()
    enc_out, dec_enc = [], []
    top = m.levels[0]
    for blk in top.encoder.blocks:
        blk.register_forward_hook(lambda mod, args, out: enc_out.append(out))
    for blk in top.decoder.blocks:
        blk.cam.register_forward_hook(lambda mod, args, out: dec_enc.append(args[1]))
    with torch.no_grad():
        m(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    assert len(enc_out) == len(dec_enc) == 3
    for i in range(3):  # decoder block i attends to encoder block N-1-i (level 1: no stitching)
        assert torch.equal(dec_enc[i], enc_out[2 - i])


def hierarchy_by_hand(m, x):
    """The spec's hierarchy with explicit quadrant/half slicing, one patch at a time."""
    H, W = x.shape[-2:]
    h, w = H // 2, W // 2
    L3, L2, L1 = m.levels[2], m.levels[1], m.levels[0]
    quads = {"tl": x[..., :h, :w], "tr": x[..., :h, w:], "bl": x[..., h:, :w], "br": x[..., h:, w:]}
    e3 = {k: L3.encoder(v) for k, v in quads.items()}
    # stitch left/right pairs: top and bottom halves (features and the encoder features attended to)
    enc3 = {half: [torch.cat([a, b], dim=3) for a, b in zip(e3[half[0] + "l"], e3[half[0] + "r"])]
            for half in ("top", "bottom")}
    g3 = {half: enc3[half][-1] for half in enc3}
    r3 = {half: L3.decoder(g3[half], enc3[half]) for half in g3}
    halves = {"top": x[..., :h, :], "bottom": x[..., h:, :]}
    e2 = {half: L2.encoder(halves[half] + r3[half]) for half in halves}
    f2 = {half: L2.cla(e2[half][-1], g3[half]) for half in halves}
    g2 = torch.cat([f2["top"], f2["bottom"]], dim=2)
    enc2 = [torch.cat([a, b], dim=2) for a, b in zip(e2["top"], e2["bottom"])]
    r2 = L2.decoder(g2, enc2)
    e1 = L1.encoder(x + r2)
    r1 = L1.decoder(L1.cla(e1[-1], g2), e1)
    return [x + torch.cat([r3["top"], r3["bottom"]], dim=2), x + r2, x + r1]


@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
def test_hierarchy_by_hand(offsets):
    m = create("saphnet", offsets=offsets, **{**TINY, "num_blocks": 2}).double()
    _randomize_offsets(m)
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        got = m(x, return_all=True)
        want = hierarchy_by_hand(m, x)
    for level, (a, e) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda s: f"output {level}: {s}")
    # level 3 sees each quadrant alone: a change in the top-left quadrant leaves B + r3 elsewhere unchanged
    x2 = x.clone()
    x2[..., :8, :12] += 0.5
    with torch.no_grad():
        lv3 = m(x2, return_all=True)[0] - x2
    assert torch.equal(lv3[..., 8:, :], (got[0] - x)[..., 8:, :])
    assert not torch.equal(lv3[..., :8, :], (got[0] - x)[..., :8, :])


# --------------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("container", ["bare", "module_prefix", "state_dict", "safetensors"])
def test_checkpoint_containers(tmp_path, container):
    """No official weights exist (the spec); deblurfast's own files: a bare state_dict, a
    DataParallel (`module.`) one, a training container, or safetensors — loaded strictly."""
    src = create("saphnet", **TINY)
    sd = src.state_dict()
    path = write_checkpoint(sd, tmp_path, container)
    torch.manual_seed(1)
    dst = load_pretrained(create("saphnet", **TINY), path, strict=True)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_checkpoint_of_the_other_variant_is_refused(tmp_path):
    torch.save(create("saphnet", offsets=False, **TINY).state_dict(), tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="missing \\(12\\): levels.0.encoder.blocks.0.cam.pdf.offset_conv"):
        load_pretrained(create("saphnet", **TINY), str(tmp_path / "a.pth"))


def test_state_dict_round_trip(tmp_path):
    m = create("saphnet", **TINY)
    _randomize_offsets(m)
    torch.save(m.state_dict(), tmp_path / "m.pth")
    torch.manual_seed(123)
    fresh = create("saphnet", **TINY)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert not torch.equal(fresh(x), m(x))
        load_pretrained(fresh, str(tmp_path / "m.pth"))
        assert torch.equal(fresh(x), m(x))


# --------------------------------------------------------------------------------------------------
# accelerated vs reference


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls each (op, backend) implementation receives."""
    counts = {}

    def counting(op, backend, fn):
        def wrapped(*args, **kwargs):
            counts[(op, backend)] = counts.get((op, backend), 0) + 1
            return fn(*args, **kwargs)
        return wrapped

    for op in ("deform_conv2d", "efficient_attention"):
        for backend, impl in list(OPS[op].impls.items()):
            monkeypatch.setitem(OPS[op].impls, backend, dataclasses.replace(impl, fn=counting(op, backend, impl.fn)))
    return counts


def _accelerable_names(num_levels=3, num_blocks=1):
    names = []
    for lv in range(num_levels):
        for part in ("encoder", "decoder"):
            for i in range(num_blocks):
                names += [f"levels.{lv}.{part}.blocks.{i}.cam.attention", f"levels.{lv}.{part}.blocks.{i}.cam.pdf"]
        if lv < num_levels - 1:
            names.append(f"levels.{lv}.cla")
    return sorted(names)


@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
def test_accelerated_matches_reference_cpu(offsets, kernel_calls):
    ref = create("saphnet", offsets=offsets, **TINY)
    _randomize_offsets(ref)
    layers = dict(accelerable_layers(ref))
    assert sorted(layers) == _accelerable_names() and all(l.backend == "reference" for l in layers.values())
    acc = deblurfast.accelerate(copy.deepcopy(ref), backend="cpu,reference")
    assert all(l.backend == "cpu,reference" for _, l in accelerable_layers(acc))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(x)
        kernel_calls.clear()
        got = acc(x)
    assert kernel_calls == {("deform_conv2d", "cpu"): 6, ("efficient_attention", "cpu"): 8}
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    deblurfast.deaccelerate(acc)
    assert all(l.backend == "reference" for _, l in accelerable_layers(acc))


@pytest.mark.slow
@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
def test_accelerated_matches_reference_triton(offsets, kernel_calls):
    """Both Triton kernels in the model (on CPU the interpreter: a tiny model), forward;
    and with offsets also every parameter's gradient."""
    _need_triton()
    ref = create("saphnet", offsets=offsets, **TINY)
    _randomize_offsets(ref)
    ref.to(TRITON_DEVICE)
    acc = deblurfast.accelerate(copy.deepcopy(ref), backend="triton,reference")
    x = torch.rand(1, 3, 16, 16).to(TRITON_DEVICE)
    with torch.set_grad_enabled(offsets):
        want = ref(x, return_all=True)
        kernel_calls.clear()
        got = acc(x, return_all=True)
    assert kernel_calls == {("deform_conv2d", "triton"): 6, ("efficient_attention", "triton"): 8}
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
    if not offsets:
        return
    loss = lambda outs: sum((o - 0.5).abs().mean() for o in outs)  # noqa: E731
    loss(want).backward()
    loss(got).backward()
    # per parameter: max error <= 1e-3 x its largest gradient, plus a floor of 1e-6 x the model's largest
    # (some gradients are rounding noise: a key bias shifts a softmax over positions, which ignores it)
    params = dict(acc.named_parameters())
    floor = 1e-6 * max(p.grad.abs().max().item() for p in ref.parameters())
    for name, p in ref.named_parameters():
        err = (params[name].grad - p.grad).abs().max().item()
        assert err <= 1e-3 * p.grad.abs().max().item() + floor, f"{name}: max error {err:.3g}"


_TRITON_TRAIN = pytest.param(
    "triton,reference", marks=[pytest.mark.slow] if TRITON_DEVICE == "cpu" else [], id="triton")


@pytest.mark.parametrize("offsets", [True, False], ids=["b_offsets", "a_no_offsets"])
@pytest.mark.parametrize("backend", [pytest.param("cpu,reference", id="cpu"), _TRITON_TRAIN])
def test_training_parity(backend, offsets):
    """Liger-style: 20 Adam steps from one initialization, reference vs accelerated,
    losses within 1e-3 relative at every step (fp32). Triton on the CPU interpreter
    (slow-marked: minutes) uses a one-level model and 4 steps; on a GPU the three-level one."""
    device = "cpu"
    config = dict(TINY)
    if backend.startswith("triton"):
        _need_triton()
        device = TRITON_DEVICE
        if device == "cpu":
            config["levels"] = 1
    ref = create("saphnet", offsets=offsets, **config).to(device)
    acc = deblurfast.accelerate(copy.deepcopy(ref), backend=backend)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 16, 16, generator=g).to(device)
    y = (x + 0.1 * torch.randn(2, 3, 16, 16, generator=g).to(device)).clamp(0, 1)
    # the per-level L1 losses (B + r3, B + r2, B + r1)
    steps = 4 if backend.startswith("triton") and device == "cpu" else 20  # the interpreter: 15 s a step
    assert_training_parity(ref, acc, lambda model, step: sum(F.l1_loss(o, y) for o in model(x, return_all=True)),
                           steps=steps)
    # the learned offsets moved off the regular grid (they start at zero)
    if offsets:
        assert any(mod.offset_conv.weight.abs().max() > 0 for mod in acc.modules()
                   if getattr(mod, "offset_conv", None) is not None)


# --------------------------------------------------------------------------------------------------
# deblur and paper size


def test_deblur_odd_size():
    m = create("saphnet", **TINY)
    rgb = np.random.default_rng(0).integers(0, 256, (21, 27, 3), dtype=np.uint8)
    out = deblurfast.deblur(m, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # by hand: [0, 1], reflect-pad to 32 x 32, model, crop, clamp, back to uint8
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = m(F.pad(x, (0, 5, 0, 11), mode="reflect"))[..., :21, :27].clamp(0, 1)
    expected = (y[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(out, expected)
    ft = deblurfast.deblur(m, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert ft.shape == (3, 21, 27) and ft.dtype == torch.float32


@pytest.mark.slow
def test_paper_size_256():
    m = create("saphnet").eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
