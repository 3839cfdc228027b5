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
    for key in ("data", "training", "heldout", "latency_720p_ms"):
        assert card[key], key
    families = card["heldout"]["families"]
    from deblurfast.train.evaluate import FAMILIES

    assert list(families) == list(FAMILIES)
    for family, m in families.items():
        if family != "sharp":
            assert m["psnr_deblurred"] > m["psnr_blurred"] and m["ssim_deblurred"] > m["ssim_blurred"], family
    markdown = open(os.path.join(os.path.dirname(weights.__file__), "default.md")).read()
    assert f"{families['linear 15 px']['psnr_deblurred']:.2f}" in markdown  # the card's table, generated


def test_demo_deblurs_the_bundled_image(tmp_path, capsys):
    result = demo.run(str(tmp_path), device="cpu", reps=1)
    # the numbers the demo prints are measured here: the 15 px motion must really be deblurred. The demo's
    # 18 px shake is beyond what the bundled model undoes (it loses about 1 dB there): printed, not asserted.
    motion = result["motion"]
    assert motion["psnr_deblurred"] > motion["psnr_blurred"] + 1.0 and motion["ssim_deblurred"] > motion["ssim_blurred"]
    assert set(result["shake"]) == set(motion)
    from deblurfast import media
    from deblurfast.metrics import psnr

    sharp = media.read_image(str(tmp_path / "sharp.png"))
    deblurred = media.read_image(str(tmp_path / "motion_deblurred.png"))
    comparison = media.read_image(str(tmp_path / "comparison.png"))
    assert comparison.shape == (2 * sharp.shape[0], 3 * sharp.shape[1], 3)
    assert abs(float(psnr(deblurred, sharp)) - result["motion"]["psnr_deblurred"]) < 1e-9
    out = capsys.readouterr().out
    assert "gain" in out and "linear 15 px" in out  # the model card's table by blur family
    assert sorted(os.listdir(tmp_path)) == sorted(demo.OUTPUTS)  # no temporary files left


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


@pytest.mark.parametrize("kind", ["motion", "shake"])
def test_synthetic_blur_is_a_fixed_draw(kind):
    sharp = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    a, b = demo.synthetic_blur(sharp, kind), demo.synthetic_blur(sharp, kind)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == sharp.shape
    assert not np.array_equal(a, demo.synthetic_blur(sharp, kind, seed=demo.DEMO_SEED + 1))
    # a real blur: the high frequencies of the noise image are gone
    grad = lambda x: np.abs(np.diff(x.astype(np.float64), axis=1)).mean()  # noqa: E731
    assert grad(a) < 0.5 * grad(sharp)


def test_evaluation_reproduces_the_committed_table(tmp_path):
    """The committed held-out result (the README's and the card's table) is measured, not typed:
    `deblurfast train --evaluate` on a subset gives the same rows within noise."""
    pytest.importorskip("skimage")
    from deblurfast.cli import main
    from deblurfast.train.evaluate import FAMILIES

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    committed = json.load(open(os.path.join(root, "bench", "results", "cpu", "heldout-default.json")))
    card = weights.default_card()
    assert committed["families"] == card["heldout"]["families"]
    out = tmp_path / "subset.json"
    assert main(["train", "--evaluate", "--evaluate-subset", "1", "1", "--evaluate-images", str(tmp_path / "img"),
                 "--evaluate-output", str(out)]) == 0
    got = json.load(open(out))
    assert committed["meta"]["weights_sha256_16"] == got["meta"]["weights_sha256_16"]
    assert len(got["rows"]) == 2 * len(FAMILIES)
    want = {(r["image"], r["size"], r["family"]): r for r in committed["rows"]}
    for row in got["rows"]:
        ref = want[(row["image"], row["size"], row["family"])]
        if row["family"] != "sharp":
            assert row["psnr_blurred"] == pytest.approx(ref["psnr_blurred"], abs=1e-6)  # the same blur, bit for bit
        assert row["psnr_deblurred"] == pytest.approx(ref["psnr_deblurred"], abs=0.05), row
        assert row["ssim_deblurred"] == pytest.approx(ref["ssim_deblurred"], abs=1e-3), row


# Issue 17 asks for >= +1 dB on such an image: the bundled model reaches +1.06 dB on average over these
# six scenes (from +0.14 to +2.77 dB); the previous bundled weights reached +0.62 dB, an identity or an
# untrained net <= 0 dB.
MEAN_GAIN_15PX_DB = 1.0


def test_bundled_model_deblurs_a_15px_motion_of_unseen_scenes():
    """load_pretrained + the bundled weights, float32 on CPU, a 15 px straight motion of procedural
    scenes whose seeds training never draws."""
    import torch

    from deblurfast.engine import Engine
    from deblurfast.metrics import psnr
    from deblurfast.models import create, load_pretrained
    from deblurfast.train.data import BlurRecipe, MotionBlurGenerator, linear_motion_psf
    from deblurfast.train.evaluate import heldout_scene_rng
    from deblurfast.train.scenes import scene

    card = weights.default_card()
    model = create(card["model"], **card["model_config"])
    with weights.weights_path() as path:
        load_pretrained(model, str(path))
    engine = Engine(model, device="cpu", dtype=torch.float32)
    size, margin, gains = 256, 20, []
    for seed in range(96, 102):
        canvas = scene(heldout_scene_rng(size, seed), size + 2 * margin, size + 2 * margin)
        recipe = BlurRecipe([linear_motion_psf(15.0, 0.9)], gamma=2.2, noise_sigma=0.003, noise_seed=5)
        R = recipe.radius
        region = canvas[margin - R:margin + size + R, margin - R:margin + size + R] / 255.0
        blurred = (MotionBlurGenerator(gamma=2.2).render(recipe, region) * 255).round().astype(np.uint8)
        sharp = canvas[margin:margin + size, margin:margin + size]
        gains.append(float(psnr(engine.deblur(blurred), sharp)) - float(psnr(blurred, sharp)))
    assert np.mean(gains) >= MEAN_GAIN_15PX_DB, gains
