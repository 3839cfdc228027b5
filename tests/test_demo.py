"""The bundled default model, its card, the demo, and atomic file writes."""

import json
import os

import numpy as np
import pytest

from deblurfast import weights
from deblurfast.cli import demo
from deblurfast._files import atomic_path, write_text
from deblurfast.models import num_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bundled_weights_match_their_card():
    card = weights.default_card()
    model = weights.default_model()  # strict load: every key and shape of the card's configuration
    assert num_parameters(model) == card["parameters"]
    size = os.path.getsize(os.path.join(os.path.dirname(weights.__file__), card["weights"]))
    assert size <= 20 * 2**20
    for key in ("data", "training", "heldout"):
        assert card[key], key
    held = card["heldout"]
    assert held["psnr_deblurred"] > held["psnr_blurred"] and held["ssim_deblurred"] > held["ssim_blurred"]


def test_demo_deblurs_the_bundled_image(tmp_path, capsys):
    result = demo.run(str(tmp_path), device="cpu", reps=1)
    # the numbers the demo prints are measured here: the trained model must really deblur
    assert result["psnr_deblurred"] > result["psnr_blurred"] + 0.3
    assert result["ssim_deblurred"] > result["ssim_blurred"]
    from deblurfast import media
    from deblurfast.metrics import psnr

    sharp = media.read_image(str(tmp_path / "sharp.png"))
    deblurred = media.read_image(str(tmp_path / "deblurred.png"))
    comparison = media.read_image(str(tmp_path / "comparison.png"))
    assert comparison.shape == (sharp.shape[0], 3 * sharp.shape[1], 3)
    assert abs(float(psnr(deblurred, sharp)) - result["psnr_deblurred"]) < 1e-9
    assert "gain" in capsys.readouterr().out
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_demo_refuses_to_overwrite_its_input(tmp_path):
    from deblurfast import media

    path = tmp_path / "sharp.png"
    media.write_image(str(path), np.zeros((16, 16, 3), np.uint8))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="overwrite the input image"):
        demo.run(str(tmp_path), device="cpu", image=str(path), reps=1)
    assert path.read_bytes() == before


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "result.json"
    write_text(str(path), "old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            assert tmp.endswith(".json") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.json"]
    write_text(str(path), json.dumps({"new": 1}))
    assert json.loads(path.read_text()) == {"new": 1}
    assert (os.stat(path).st_mode & 0o777) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_synthetic_blur_is_a_fixed_draw():
    sharp = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    a, b = demo.synthetic_blur(sharp), demo.synthetic_blur(sharp)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == sharp.shape
    assert not np.array_equal(a, demo.synthetic_blur(sharp, seed=demo.DEMO_SEED + 1))
    # a real blur: the high frequencies of the noise image are gone
    grad = lambda x: np.abs(np.diff(x.astype(np.float64), axis=1)).mean()  # noqa: E731
    assert grad(a) < 0.3 * grad(sharp)


def test_card_heldout_scores_are_reproduced(tmp_path):
    """The card's held-out numbers are measured, not typed: recompute them from the bundled
    weights and the held-out scikit-image samples."""
    pytest.importorskip("skimage")
    from deblurfast.media import read_image
    from deblurfast.train.data import sample_images
    from deblurfast.train.default_weights import HELDOUT, heldout_scores

    card = weights.default_card()
    assert tuple(card["data"]["heldout_images"]) == HELDOUT
    paths = sample_images(str(tmp_path), names=HELDOUT)
    images = {os.path.splitext(os.path.basename(p))[0]: read_image(p) for p in paths}
    scores = heldout_scores(weights.default_model(), images, "cpu")
    for key in ("psnr_blurred", "psnr_deblurred"):
        assert abs(scores[key] - card["heldout"][key]) < 0.01, key
    for key in ("ssim_blurred", "ssim_deblurred"):
        assert abs(scores[key] - card["heldout"][key]) < 1e-4, key
