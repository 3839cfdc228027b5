"""Padding to a model's minimum size, its receptive field, and tiles that do not show
(deblurfast.engine: IOConvention.pad, plan_tiles, run_tiled)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import deblurfast
from deblurfast.engine import Engine
from deblurfast.engine import TilingWarning, plan_tiles
from deblurfast.models import IOConvention, create, list_models
from deblurfast.models.aspdc import xavier_init_

pytestmark = pytest.mark.usefixtures("one_thread")

SHALLOW_ASPDC = dict(channels=(4, 4, 4), head_res_blocks=0, group_res_blocks=0, mask_res_blocks=0,
                     d0_mask_layout="padded")


def aspdc_with_offsets(**config):
    """ASPDC with every conv initialized as the authors' training does, and small nonzero DCN
    offsets (the zero-initialized offset predictors would hide their reach from the gradient)."""
    torch.manual_seed(0)
    model = xavier_init_(create("aspdc", **config))
    for module in model.modules():
        if hasattr(module, "p_conv"):
            module.p_conv.weight.data.mul_(0.05)  # offsets well under a pixel
    return model.double().eval()


def gradient_reach(model, height=None, width=16):
    """How far (input rows) the gradient of one output row's sum reaches, in float64."""
    io = model.io
    height = height or 2 * io.receptive_field + 64
    x = torch.rand(1, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    y = model(io.to_model(x))
    y = y[io.output] if io.output is not None else y
    c = height // 2 // io.multiple * io.multiple
    y[0, :, c].sum().backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero()[:, 0]
    return max(c - int(rows.min()), int(rows.max()) - c)


@pytest.mark.parametrize("config", [SHALLOW_ASPDC,
                                    dict(SHALLOW_ASPDC, head_res_blocks=1, group_res_blocks=1, mask_res_blocks=1),
                                    dict(SHALLOW_ASPDC, mask_res_blocks=3, dilations=(1, 2))])
def test_aspdc_receptive_field_is_its_gradient_reach(config):
    model = aspdc_with_offsets(**config)
    assert gradient_reach(model) == model.io.receptive_field


def test_receptive_field_follows_the_configuration():
    assert create("aspdc").io.receptive_field == 256  # the paper's depth
    assert create("aspdc", **dict(SHALLOW_ASPDC, d0_mask_layout="mmcv")).io.receptive_field == 156
    assert create("aspdc").io.global_context and "mmcv" in create("aspdc").io.global_context
    assert create("aspdc", d0_mask_layout="padded").io.global_context is None
    for name in list_models():
        if not name.startswith("_") and name != "aspdc_reblur":
            assert create(name).to("meta").io.receptive_field > 0, name


def test_tiled_equals_untiled_at_the_default_overlap():
    """A model whose receptive field (156) is far larger than a usual overlap: with the default
    overlap (twice the field + the fade) the tiled result is the untiled one, in 2-D with tiles
    of uneven overlap at the border; with a 32-pixel overlap the seams show."""
    model = aspdc_with_offsets(**SHALLOW_ASPDC)
    field = model.io.receptive_field
    assert field == 156
    image = np.random.default_rng(1).random((440, 420, 3))  # float64 in [0, 1]
    whole = deblurfast.deblur(model, image)
    plan = plan_tiles(model.io, 400)
    assert plan.overlap == 2 * field + 16 and plan.margin == field and not plan.notes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        tiled = deblurfast.deblur(model, image, tile=400)
    assert np.abs(tiled - whole).max() < 1e-12
    with pytest.warns(TilingWarning, match="less than twice the model's receptive field"):
        seams = deblurfast.deblur(model, image[:, :40], tile=400, overlap=32)
    assert np.abs(seams - whole[:, :40]).max() > 1e-5


def test_engine_tiles_the_bundled_model_within_one_level():
    """The bundled model (trained weights, receptive field 266) through the engine, as
    `deblurfast deblur --tile` runs it. Its strip pooling sees whole rows and columns, so tiles
    cannot equal the whole image exactly; with the default overlap they stay within one 8-bit level."""
    from deblurfast.weights import default_model

    engine = Engine(default_model(), device="cpu")
    assert engine.io.receptive_field == 266 and engine.io.global_context
    frame = np.random.default_rng(2).integers(0, 256, (1400, 20, 3), dtype=np.uint8)
    whole = engine.deblur(frame)
    tiled = engine.deblur(frame, tile=600)  # three tiles down the strip
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.1


class Strided(nn.Module):
    """A local stand-in with a stride-2 grid: conv 3x3 stride 2, conv 3x3, transposed conv x2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)

    def forward(self, x):
        return x + self.up(torch.tanh(self.mid(torch.tanh(self.down(x)))))


@pytest.mark.parametrize("tile, overlap", [(32, None), (48, 40), (26, 16)])
def test_tiles_keep_the_stride_grid_and_sum_to_one(tile, overlap):
    """Tiles start on the model's stride grid (odd requests are rounded), and every pixel's
    blend weights sum to one, also where three tiles overlap (overlap > tile / 2)."""
    model = Strided().double()
    model.io = IOConvention(multiple=2, receptive_field=6)
    image = np.random.default_rng(4).random((75, 61, 3))
    whole = deblurfast.deblur(model, image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TilingWarning)
        tiled = deblurfast.deblur(model, image, tile=tile, overlap=overlap)
    assert np.abs(tiled - whole).max() < 1e-12


def test_plan_tiles_checks_and_says_what_it_adjusts():
    io = create("aspdc", **SHALLOW_ASPDC).io  # multiple 4, minimum 12, receptive field 156
    for tile, match in ((0, "tile must be a positive number of pixels, got 0"),
                        (-5, "tile must be a positive number of pixels, got -5"),
                        (8, "tile 8 is smaller than the model's smallest input, 12 pixels")):
        with pytest.raises(ValueError, match=match):
            plan_tiles(io, tile)
    with pytest.raises(TypeError, match="tile must be an int"):
        plan_tiles(io, 64.5)
    with pytest.raises(ValueError, match="overlap 64 must be smaller than the tile, 64"):
        plan_tiles(io, 64, 64)
    with pytest.raises(ValueError, match="overlap must be >= 0 pixels, got -1"):
        plan_tiles(io, 64, -1)
    plan = plan_tiles(io, 1002, 30)
    assert (plan.tile, plan.overlap) == (1000, 32)
    assert any("tile 1002 rounded down to 1000" in n for n in plan.notes)
    assert any("overlap 30 rounded to 32" in n for n in plan.notes)
    assert any("less than twice the model's receptive field (156 pixels)" in n for n in plan.notes)
    small = plan_tiles(io, 64)  # the default overlap (328) does not fit: clamped, and said so
    assert small.overlap == 60 and any("overlap clamped to 60" in n and "at least 332" in n for n in small.notes)
    assert plan_tiles(io, 12, 0).overlap == 0
    rdaf = plan_tiles(create("rdafnet_ss", width=4, num_blocks=1).io, 1024)
    assert any("depends on the whole image (instance normalization" in n for n in rdaf.notes)
    assert plan_tiles(IOConvention(), 64).notes[0].startswith("the model's receptive field is unknown")


def test_reflect_padding_beyond_the_image_mirrors_again():
    """Padding larger than the image (a 1-pixel image to a 16-pixel model) repeats the
    reflection like numpy's 'reflect' (a 1-pixel side replicates)."""
    io = IOConvention(multiple=16, pad_mode="reflect", min_size=16)
    for h, w in ((1, 1), (2, 3), (3, 17), (5, 40)):
        x = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
        y, size = io.pad(x)
        assert size == (h, w) and y.shape[-2:] == (io.padded_size(h), io.padded_size(w))
        want = np.pad(x[0, 0].numpy(), ((0, y.shape[-2] - h), (0, y.shape[-1] - w)), mode="reflect")
        assert np.array_equal(y[0, 0].numpy(), want)


NARROW = {"aspdc": dict(channels=(4, 4, 4), head_res_blocks=1, group_res_blocks=1, mask_res_blocks=1),
          "saphnet": dict(channels=8, attention_maps=4, num_blocks=1),
          "banet": dict(channels=4, stem_channels=4, num_bams=1),
          "banet_plus": dict(channels=4, stem_channels=4, num_bams=1),
          "attentive_msnet": dict(widths=(4, 4, 4), num_blocks=1, reduction=2),
          "rdafnet_ss": dict(width=4, num_blocks=1),
          "rdafnet_ms": dict(width=4, num_blocks=(1, 1, 1), csff_index=(0, 0, 0))}


def test_narrow_configurations_cover_every_model():
    assert set(NARROW) == {n for n in list_models() if not n.startswith("_")} - {"aspdc_reblur"}


@pytest.mark.parametrize("name", sorted(NARROW))
def test_every_model_deblurs_tiny_and_thin_images(name):
    """1x1, 3x1000 and 8x64 images (below the minimum size, thinner than the deepest
    down-sampling, not multiples) through deblurfast.deblur."""
    model = create(name, **NARROW[name])
    rng = np.random.default_rng(5)
    for h, w in ((1, 1), (3, 1000), (8, 64), (64, 8)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = deblurfast.deblur(model, image)
        assert out.shape == image.shape and out.dtype == np.uint8, (name, h, w)
