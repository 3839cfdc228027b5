"""deblurfast.train.data: dataset layouts on tiny fake trees, paired augmentation, determinism, and
the synthetic motion-blur generator (a point source becomes the PSF, energy preserved, PSNR drops)."""

import itertools
import os

import numpy as np
import pytest
import torch

from deblurfast.media import read_image, write_image
from deblurfast.train import data as D


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def pattern(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


# -- determinism --------------------------------------------------------------------------------------------


def test_sample_rng_depends_on_seed_epoch_index_only():
    draw = lambda *k: D.sample_rng(*k).random(4)  # noqa: E731
    np.random.seed(123)
    a = draw(7, 2, 5)
    np.random.seed(999)
    torch.manual_seed(5)
    assert np.array_equal(a, draw(7, 2, 5))  # no global RNG involved
    assert not np.array_equal(a, draw(7, 3, 5)) and not np.array_equal(a, draw(7, 2, 6))
    assert not np.array_equal(a, draw(8, 2, 5))
    assert D.sample_rng(-1, 0, 0).random() == D.sample_rng(2**64 - 1, 0, 0).random()  # negative seeds work


# -- paired augmentation ------------------------------------------------------------------------------------------


def test_reflect_indices_match_numpy_reflect():
    for n in (1, 2, 5):
        ref = np.pad(np.arange(n), 13, mode="reflect") if n > 1 else np.zeros(n + 26, dtype=int)
        assert np.array_equal(D.reflect_indices(-13, n + 26, n), ref)


def test_paired_random_crop_is_the_same_window():
    a = np.arange(20 * 30 * 3, dtype=np.int64).reshape(20, 30, 3)
    b = a + 10_000
    seen = set()
    for i in range(30):
        ca, cb = D.paired_random_crop(a, b, (8, 12), D.sample_rng(0, 0, i))
        assert ca.shape == (8, 12, 3) and np.array_equal(cb - ca, np.full_like(ca, 10_000))
        top, left = divmod(int(ca[0, 0, 0]) // 3, 30)
        assert np.array_equal(ca, a[top:top + 8, left:left + 12])
        seen.add((top, left))
    assert len(seen) > 20  # random positions
    small = np.arange(4 * 5 * 3).reshape(4, 5, 3)
    ca, cb = D.paired_random_crop(small, small + 1, 7, D.sample_rng(0, 0, 0))  # smaller: reflect-completed
    assert ca.shape == (7, 7, 3) and np.array_equal(ca[:4, :5], small) and np.array_equal(ca[4, :5], small[2])
    with pytest.raises(ValueError, match="differ in size"):
        D.paired_random_crop(a, a[:10], 8, D.sample_rng(0, 0, 0))


def test_dihedral_transforms_and_paired_augment():
    img = np.arange(3 * 3).reshape(3, 3, 1)
    outs = {D.dihedral(img, k).tobytes() for k in range(8)}
    assert len(outs) == 8  # 8 distinct flips/rotations
    assert np.array_equal(D.dihedral(img, 0), img) and np.array_equal(D.dihedral(img, 4), img[:, ::-1])
    a = pattern(6, 6, 0)
    ks = set()
    for i in range(64):
        rng = D.sample_rng(1, 0, i)
        k = D.random_dihedral(D.sample_rng(1, 0, i))
        ks.add(k)
        ta, tb = D.paired_augment(a, 255 - a, rng)
        assert np.array_equal(tb, 255 - ta) and np.array_equal(ta, D.dihedral(a, k))
    assert ks == set(range(8))
    flips_only = {D.random_dihedral(D.sample_rng(0, 0, i), rot90=False) for i in range(64)}
    assert flips_only == {0, 2, 4, 6}  # identity, 180 degrees (h+v flip), h flip, v flip
    assert {D.random_dihedral(D.sample_rng(0, 0, i), square=False) for i in range(64)} == {0, 2, 4, 6}
    assert {D.random_dihedral(D.sample_rng(0, 0, i), flip=False, rot90=False) for i in range(8)} == {0}


# -- readers on fake trees ------------------------------------------------------------------------------------


def put(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_image(path, image)


def test_gopro_original_layout(tmp_path):
    root = tmp_path / "GOPRO_Large"
    for split, scenes in (("train", ("GOPR0372_07_00", "GOPR0374_11_00")), ("test", ("GOPR0384_11_00",))):
        for s, scene in enumerate(scenes):
            for f in range(2):
                name = f"{f + 1:06d}.png"
                for kind in ("blur", "blur_gamma", "sharp"):
                    put(str(root / split / scene / kind / name), pattern(8, 8, hash((kind, s, f)) % 1000))
    pairs = D.gopro_pairs(str(root), "train")
    assert [p.name for p in pairs] == ["GOPR0372_07_00/000001.png", "GOPR0372_07_00/000002.png",
                                       "GOPR0374_11_00/000001.png", "GOPR0374_11_00/000002.png"]
    assert pairs[0].blur.endswith("GOPR0372_07_00/blur/000001.png")
    assert pairs[0].sharp.endswith("GOPR0372_07_00/sharp/000001.png")
    gamma = D.gopro_pairs(str(root), "train", blur_folder="blur_gamma")
    assert gamma[0].blur.endswith("blur_gamma/000001.png")
    assert len(D.gopro_pairs(str(root), "test")) == 2
    assert len(D.gopro_pairs(str(root / "test"))) == 2  # the split folder itself
    os.remove(root / "test" / "GOPR0384_11_00" / "sharp" / "000002.png")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        D.gopro_pairs(str(root), "test")
    with pytest.raises(FileNotFoundError, match="no pairs"):
        D.gopro_pairs(str(tmp_path), "val")


@pytest.mark.parametrize("folders", [("input", "target"), ("blur", "sharp")])
def test_gopro_flattened_layouts(tmp_path, folders):
    for n in ("GOPR0372_07_00-000047.png", "GOPR0372_07_00-000048.png"):
        for f in folders:
            put(str(tmp_path / "GoPro" / "train" / f / n), pattern(8, 8, 0))
    pairs = D.gopro_pairs(str(tmp_path / "GoPro"), "train")
    assert [p.name for p in pairs] == ["GOPR0372_07_00-000047.png", "GOPR0372_07_00-000048.png"]
    assert pairs[1].blur.endswith(f"{folders[0]}/GOPR0372_07_00-000048.png")
    assert pairs[1].sharp.endswith(f"{folders[1]}/GOPR0372_07_00-000048.png")
    ds = D.build_dataset("pairs", str(tmp_path / "GoPro"), crop=4)
    assert len(ds) == 2 and ds[0]["blur"].shape == (3, 4, 4)


def make_hide(root, with_lists=True):
    train, close, far = ["1fromGOPR0950.MP4.png", "2fromGOPR0950.MP4.png"], ["5fromGOPR1001.MP4.png"], [
        "7fromGOPR1080.MP4.png", "8fromGOPR1080.MP4.png"]
    for n in train:
        put(str(root / "train" / n), pattern(8, 8, 1))
    for n in close:
        put(str(root / "test" / "test-close-ups" / n), pattern(8, 8, 2))
    for n in far:
        put(str(root / "test" / "test-long-shot" / n), pattern(8, 8, 3))
    for n in train + close + far:
        put(str(root / "GT" / n), pattern(8, 8, 4))
    if with_lists:
        (root / "train.txt").write_text("\n".join(train) + "\n")
        (root / "test.txt").write_text("\n".join(far + close) + "\n\n")
    return train, close, far


@pytest.mark.parametrize("with_lists", [True, False])
def test_hide_layout(tmp_path, with_lists):
    train, close, far = make_hide(tmp_path / "HIDE_dataset", with_lists)
    pairs = D.hide_pairs(str(tmp_path), "train")  # the folder holding HIDE_dataset works too
    assert [p.name for p in pairs] == train
    assert all(p.sharp.endswith(f"GT/{p.name}") and p.blur.endswith(f"train/{p.name}") for p in pairs)
    test = D.hide_pairs(str(tmp_path / "HIDE_dataset"), "test")
    names = {p.name for p in test}
    assert names == {f"test-close-ups/{n}" for n in close} | {f"test-long-shot/{n}" for n in far}
    assert all(os.path.basename(p.sharp) == os.path.basename(p.blur) and "/GT/" in p.sharp for p in test)
    assert len(D.hide_pairs(str(tmp_path), "test", subset="long-shot")) == 2
    assert len(D.hide_pairs(str(tmp_path), "test", subset="close-ups")) == 1
    with pytest.raises(ValueError, match="subset"):
        D.hide_pairs(str(tmp_path), "test", subset="far")


def test_realblur_list_files(tmp_path):
    ref = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    lines = []
    for scene, i in (("scene230", 1), ("scene230", 2), ("scene001", 11)):
        gt, blur = f"{ref}/{scene}/gt/gt_{i}.png", f"{ref}/{scene}/blur/blur_{i}.png"
        put(str(tmp_path / gt), np.full((8, 8, 3), 200, np.uint8))
        put(str(tmp_path / blur), np.full((8, 8, 3), 50, np.uint8))
        lines.append(f"{gt} {blur}")
    (tmp_path / "RealBlur_J_train_list.txt").write_text("\n".join(lines) + "\n")
    pairs = D.realblur_pairs(str(tmp_path / "RealBlur_J_train_list.txt"))
    assert [p.name for p in pairs] == ["scene230/blur_1.png", "scene230/blur_2.png", "scene001/blur_11.png"]
    ds = D.build_dataset("realblur", str(tmp_path), crop=4, variant="J")
    s = ds[0]
    # the ground truth is the FIRST path of a line: sharp = 200, blur = 50
    assert torch.all(s["sharp"] == 200 / 255) and torch.all(s["blur"] == 50 / 255)
    with pytest.raises(FileNotFoundError, match="RealBlur_R_train_list"):
        D.build_dataset("realblur", str(tmp_path), variant="R")
    (tmp_path / "bad.txt").write_text("only_one_path.png\n")
    with pytest.raises(ValueError, match="gt_path blur_path"):
        D.realblur_pairs(str(tmp_path / "bad.txt"))


def test_paired_dataset_same_crop_and_flip_and_determinism(tmp_path):
    pairs = []
    for i in range(3):
        sharp = pattern(20, 24, i)
        put(str(tmp_path / "sharp" / f"{i}.png"), sharp)
        put(str(tmp_path / "blur" / f"{i}.png"), 255 - sharp)  # blur = inverted sharp
        pairs.append((str(tmp_path / "blur" / f"{i}.png"), str(tmp_path / "sharp" / f"{i}.png")))
    ds = D.PairedDataset(pairs, crop=8, seed=3)
    first = [ds[i] for i in range(3)]
    for s in first:
        assert s["blur"].shape == (3, 8, 8) and s["blur"].dtype == torch.float32
        assert torch.allclose(s["blur"], 1 - s["sharp"], atol=1e-6)  # the same window, the same flip
    assert [s["name"] for s in first] == ["0.png", "1.png", "2.png"]
    again = ds[1]
    assert torch.equal(again["blur"], first[1]["blur"])
    ds.set_epoch(1)
    epoch1 = ds[1]
    assert not torch.equal(epoch1["sharp"], first[1]["sharp"])  # a new crop in a new epoch
    ds.set_epoch(0)
    assert torch.equal(ds[(1, 1)]["sharp"], epoch1["sharp"])  # (epoch, index)
    assert torch.equal(ds[1]["sharp"], first[1]["sharp"])  # ... and back
    whole = D.PairedDataset(pairs, crop=None, augment=False)[2]
    assert torch.equal(whole["sharp"], D.to_tensor(read_image(pairs[2][1])))


def test_build_dataset_kinds(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset kind"):
        D.build_dataset("div2k", str(tmp_path))
    make_hide(tmp_path / "HIDE_dataset")
    train = D.build_dataset("hide", str(tmp_path), crop=4, train=True, seed=1)
    test = D.build_dataset("hide", str(tmp_path), train=False)
    assert isinstance(train, D.PairedDataset) and train.augment and train.crop == (4, 4)
    assert len(test) == 3 and not test.augment and test[0]["blur"].shape == (3, 8, 8)


# -- the synthetic blur generator ----------------------------------------------------------------------------


def test_trajectory_length_and_determinism():
    t = D.camera_trajectory(D.sample_rng(0, 0, 0), length=25.0, steps=100, anxiety=0.1, gaussian=10.0)
    assert t.shape == (100, 2) and np.allclose(t[0], 0)
    assert np.sum(np.hypot(*np.diff(t, axis=0).T)) == pytest.approx(25.0)  # path length
    assert np.array_equal(t, D.camera_trajectory(D.sample_rng(0, 0, 0), 25.0, 100, 0.1, gaussian=10.0))
    straight = D.camera_trajectory(D.sample_rng(0, 0, 1), 10.0, 50, anxiety=0.0)
    assert np.ptp(np.hypot(*(straight - straight[0]).T)) == pytest.approx(10.0)  # a straight segment


def test_psf_rasterization():
    line = np.stack([np.linspace(0, 8, 81), np.zeros(81)], axis=1)  # horizontal, 8 px
    psf = D.trajectory_psf(line)
    assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1 and (psf >= 0).all()
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    c = psf.shape[0] // 2
    assert psf[c].sum() == pytest.approx(1.0)  # all on the centre row
    assert np.count_nonzero(psf[c]) == 9 and psf[c, c - 4] > 0 and psf[c, c + 4] > 0
    traj = D.camera_trajectory(D.sample_rng(5, 0, 0), 20.0, 200, anxiety=0.1, gaussian=10.0)
    psf = D.trajectory_psf(traj)
    yy, xx = np.mgrid[:psf.shape[0], :psf.shape[1]]
    c = psf.shape[0] // 2
    assert (psf * yy).sum() == pytest.approx(c) and (psf * xx).sum() == pytest.approx(c)  # centroid-centred
    half = D.trajectory_psf(traj, exposure=0.5)
    assert half.sum() == pytest.approx(1.0) and half.shape[0] <= psf.shape[0]
    mid = D.trajectory_psf(line, anchor="middle")
    assert mid[mid.shape[0] // 2, mid.shape[0] // 2] > 0


def exact_generator(**kw):
    return D.MotionBlurGenerator(gamma=None, noise=(0.0, 0.0), quantize=False, **kw)


def test_point_source_becomes_the_psf_and_energy_is_preserved():
    gen = exact_generator()
    kernel = D.trajectory_psf(D.camera_trajectory(D.sample_rng(1, 0, 0), 15.0, 200, 0.1, gaussian=10.0))
    recipe = D.BlurRecipe([kernel])
    R, k = recipe.radius, kernel.shape[0]
    img = np.zeros((40 + 2 * R, 40 + 2 * R, 3))
    img[R + 20, R + 20] = 1.0  # a point source at output pixel (20, 20)
    out = gen.render(recipe, img)
    assert out.shape == (40, 40, 3)
    placed = np.zeros((40, 40))
    placed[20 - R:20 - R + k, 20 - R:20 - R + k] = kernel
    assert np.abs(out[..., 1] - placed).max() < 1e-6  # the PSF itself, not flipped
    assert out.sum() == pytest.approx(3.0, abs=1e-5)  # energy preserved
    flat = gen.render(recipe, np.full((30 + 2 * R, 30 + 2 * R, 3), 0.37))
    assert np.abs(flat - 0.37).max() < 1e-6


def test_convolve_valid_is_true_convolution():
    rng = np.random.default_rng(0)
    img, k = rng.random((13, 11, 2)), rng.random((5, 5))
    ref = np.zeros((9, 7, 2))
    for y in range(9):
        for x in range(7):
            ref[y, x] = (img[y:y + 5, x:x + 5] * k[::-1, ::-1, None]).sum(axis=(0, 1))
    assert np.abs(D.convolve_valid(img, k) - ref).max() < 1e-12
    outs = list(D.convolve_valid_many(img, [k, np.ones((1, 1))], dtype=np.float64))
    assert outs[1].shape == (9, 7, 2) and np.allclose(outs[1], img[2:-2, 2:-2])  # cropped to the largest margin


def test_spatially_varying_blur_blends_region_kernels():
    masks = D.blend_masks(np.array([[0.5, 0.25], [0.5, 0.75]]), (0.05, 0.05), 20, 40)
    assert np.allclose(masks.sum(axis=0), 1.0) and masks[0, 10, 2] > 0.999 and masks[1, 10, 37] > 0.999
    gen = exact_generator()
    left = D.trajectory_psf(np.stack([np.linspace(0, 6, 61), np.zeros(61)], 1))  # horizontal
    right = D.trajectory_psf(np.stack([np.zeros(61), np.linspace(0, 6, 61)], 1))  # vertical
    recipe = D.BlurRecipe([left, right], centres=np.array([[0.5, 0.25], [0.5, 0.75]]), spread=(0.05, 0.05))
    R = recipe.radius
    img = np.zeros((40 + 2 * R, 80 + 2 * R, 3))
    img[R + 20, R + 10] = 1.0  # in the left region
    img[R + 20, R + 70] = 1.0  # in the right region
    out = gen.render(recipe, img)[..., 0]
    assert np.allclose(out[[17, 18, 19, 21, 22, 23], 10], 0, atol=1e-6)  # left: horizontal blur
    assert out[20, 7:14].sum() == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(out[20, 67:74][[0, 1, 2, 4, 5, 6]], 0, atol=1e-6)  # right: vertical blur
    assert out[17:24, 70].sum() == pytest.approx(1.0, abs=1e-4)
    flat = gen.render(recipe, np.full(img.shape, 0.6))
    assert np.abs(flat - 0.6).max() < 1e-6  # masks form a partition of unity


def test_gamma_noise_and_quantization():
    kernel = np.zeros((3, 3))
    kernel[1, 0] = kernel[1, 2] = 0.5  # average of the left and right neighbours
    img = np.zeros((3, 5, 3))
    img[:, 1] = 1.0
    linear = exact_generator().render(D.BlurRecipe([kernel]), img)
    gamma = D.MotionBlurGenerator(gamma=2.2, noise=(0, 0), quantize=False).render(D.BlurRecipe([kernel]), img)
    assert linear[0, 1, 0] == pytest.approx(0.5) and gamma[0, 1, 0] == pytest.approx(0.5 ** (1 / 2.2))
    recipe = D.BlurRecipe([np.ones((1, 1))], noise_sigma=0.05, noise_seed=11)
    gen = D.MotionBlurGenerator(gamma=None, noise=(0, 0), quantize=True)
    noisy = gen.render(recipe, np.full((200, 200, 3), 0.5))
    assert np.std(noisy - 0.5) == pytest.approx(0.05, rel=0.05)
    assert np.allclose(noisy * 255, np.round(noisy * 255), atol=1e-4)  # 8-bit levels
    assert np.array_equal(noisy, gen.render(recipe, np.full((200, 200, 3), 0.5)))  # noise from the recipe


def test_generator_samples_are_deterministic_and_varied():
    gen = D.MotionBlurGenerator(regions=3, varying_probability=1.0)
    a, b = gen.sample(D.sample_rng(0, 0, 0)), gen.sample(D.sample_rng(0, 0, 0))
    assert len(a.kernels) > 1 and a.centres.shape == (len(a.kernels), 2)
    assert all(np.array_equal(x, y) for x, y in zip(a.kernels, b.kernels)) and a.noise_seed == b.noise_seed
    uniform = D.MotionBlurGenerator(varying_probability=0.0).sample(D.sample_rng(0, 0, 0))
    assert len(uniform.kernels) == 1 and uniform.centres is None
    for k in a.kernels:
        assert k.sum() == pytest.approx(1.0) and k.shape[0] % 2 == 1


# -- datasets from sharp images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharp")
    paths = D.sample_images(str(folder), names=("astronaut", "camera", "coffee"))
    return str(folder), paths


def test_sample_images_written_atomically_once(sharp_folder):
    folder, paths = sharp_folder
    assert sorted(os.listdir(folder)) == ["astronaut.png", "camera.png", "coffee.png"]  # no temporary files
    img = read_image(paths[1])
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and np.array_equal(img[..., 0], img[..., 2])
    import skimage.data

    assert np.array_equal(read_image(paths[0]), skimage.data.astronaut())
    mtime = os.stat(paths[0]).st_mtime_ns
    assert D.sample_images(folder, names=("astronaut",)) == [paths[0]] and os.stat(paths[0]).st_mtime_ns == mtime
    assert set(D.SAMPLE_IMAGES) >= {"astronaut", "coffee", "chelsea", "rocket"}


def test_synthetic_dataset_is_a_real_blur(sharp_folder):
    folder, _ = sharp_folder
    gen = dict(length=(12.0, 20.0), noise=(0.0, 0.0))
    ds = D.SyntheticBlurDataset(folder, crop=None, augment=False, seed=0, generator=gen)
    s = ds[0]  # astronaut, whole image
    sharp = read_image(os.path.join(folder, "astronaut.png"))
    assert torch.equal(s["sharp"], D.to_tensor(sharp)) and s["name"] == "astronaut.png"
    blur = s["blur"].numpy()
    assert blur.shape == (3, 512, 512) and blur.dtype == np.float32 and blur.min() >= 0 and blur.max() <= 1
    assert psnr(blur, s["sharp"].numpy()) < 30.0  # a real blur
    # energy is kept in linear light (gamma 2.2: the blur happens on x ** 2.2)
    linear = lambda x: np.power(np.asarray(x, np.float64), 2.2).mean()  # noqa: E731
    assert linear(blur) == pytest.approx(linear(s["sharp"].numpy()), rel=0.01)
    assert blur.mean() > s["sharp"].numpy().mean()  # ... so the encoded image brightens (Jensen)
    # high frequencies drop: the blurred image's gradient energy is much lower
    grad = lambda x: np.abs(np.diff(x, axis=2)).mean() + np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert grad(blur) < 0.7 * grad(s["sharp"].numpy())


def test_synthetic_dataset_determinism_and_workers(sharp_folder):
    folder, _ = sharp_folder
    ds = D.SyntheticBlurDataset(folder, crop=64, seed=4, generator=dict(length=(4.0, 10.0)))
    ds.set_epoch(2)
    direct = [ds[i] for i in range(3)]
    for s in direct:
        assert s["blur"].shape == (3, 64, 64) and s["sharp"].shape == (3, 64, 64)
    again = D.SyntheticBlurDataset(folder, crop=64, seed=4, generator=dict(length=(4.0, 10.0)))
    again.set_epoch(2)
    assert all(torch.equal(again[i]["blur"], direct[i]["blur"]) for i in range(3))  # a "resumed" run
    again.set_epoch(3)
    assert not torch.equal(again[0]["blur"], direct[0]["blur"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    (batch,) = list(loader)
    assert torch.equal(batch["blur"], torch.stack([s["blur"] for s in direct]))
    assert torch.equal(batch["sharp"], torch.stack([s["sharp"] for s in direct]))
    # an explicit (epoch, index) works whatever epoch the (worker's copy of the) dataset holds
    ds.set_epoch(0)
    assert torch.equal(ds[(2, 1)]["blur"], direct[1]["blur"])


def test_synthetic_dataset_repeat_gives_distinct_pairs(sharp_folder):
    # a few images repeated within an epoch: every repeat is a new crop and blur of the same image
    folder, _ = sharp_folder
    ds = D.SyntheticBlurDataset(folder, crop=48, seed=1, repeat=4, generator=dict(length=(4.0, 10.0)))
    assert len(ds) == 12
    same_image = [ds[i] for i in (1, 4, 7, 10)]  # camera.png each time
    assert {s["name"] for s in same_image} == {"camera.png"}
    for a, b in itertools.combinations(same_image, 2):
        assert not torch.equal(a["blur"], b["blur"]) and not torch.equal(a["sharp"], b["sharp"])
    with pytest.raises(IndexError, match="index 12 out of range for 12 samples"):
        ds[12]
    with pytest.raises(ValueError, match="repeat must be a positive int, got 0"):
        D.SyntheticBlurDataset(folder, repeat=0)


def test_synthetic_crops_use_real_context(sharp_folder):
    # the blurred crop equals the matching window of the whole blurred image (same recipe), not a
    # crop blurred with reflected borders
    folder, _ = sharp_folder
    gen = D.MotionBlurGenerator(length=(8.0, 8.0), varying_probability=0.0, noise=(0, 0))
    img = read_image(os.path.join(folder, "coffee.png"))
    recipe = gen.sample(D.sample_rng(0, 0, 0))
    R = recipe.radius
    whole = gen.render(recipe, D.crop_window(img, -R, -R, img.shape[0] + 2 * R, img.shape[1] + 2 * R) / 255.0)
    crop = gen.render(recipe, D.crop_window(img, 100 - R, 200 - R, 32 + 2 * R, 48 + 2 * R) / 255.0)
    assert np.abs(crop - whole[100:132, 200:248]).max() <= 1 / 255 + 1e-6
    assert D.build_dataset("synthetic", folder, crop=32, seed=1)[1]["blur"].shape == (3, 32, 32)


# -- blur families, degradations and procedural scenes -------------------------------------------------------


def tent_rendered_segment(length, angle, size, samples=4000):
    """Loop-level oracle of a straight-motion PSF: the segment's path integral, by the midpoint rule
    on `samples` pieces, of each pixel's bilinear tent max(0, 1 - |dx|) x max(0, 1 - |dy|); normalised."""
    r = size // 2
    out = np.zeros((size, size))
    for i in range(samples):
        t = ((i + 0.5) / samples - 0.5) * length
        x, y = t * np.cos(angle), t * np.sin(angle)
        for row in range(size):
            wy = 1.0 - abs(row - r - y)
            if wy <= 0:
                continue
            for col in range(size):
                wx = 1.0 - abs(col - r - x)
                if wx > 0:
                    out[row, col] += wx * wy
    return out / out.sum()


@pytest.mark.parametrize("length,angle", [(3.0, 0.0), (7.5, 0.6), (14.0, 2.2), (25.0, -1.1)])
def test_linear_motion_psf_has_the_asked_length_and_angle(length, angle):
    k = D.linear_motion_psf(length, angle)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.min() >= 0
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    oracle = tent_rendered_segment(length, angle, k.shape[0])
    assert np.abs(k - oracle).max() < 0.005 * k.max()  # sub-pixel rendering, 16 pieces per pixel of path
    # second moments: the major axis is the motion, its variance that of a uniform segment (+ the tent's)
    r = k.shape[0] // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    mean = np.array([(k * xx).sum(), (k * yy).sum()])
    assert np.abs(mean).max() < 1e-9  # centred: the blur does not shift the image
    cov = np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, 1]
    assert abs(abs(major[0] * np.cos(angle) + major[1] * np.sin(angle)) - 1.0) < 1e-3  # the asked angle
    # the asked length: a uniform segment's variance L^2 / 12 plus the bilinear splat's 1/6 along the path
    assert np.sqrt(12 * (values[1] - 1 / 6)) == pytest.approx(length, rel=0.03)
    assert np.array_equal(D.linear_motion_psf(0.0, 1.0), np.ones((1, 1)))
    with pytest.raises(ValueError, match="length must be >= 0"):
        D.linear_motion_psf(-1.0, 0.0)


@pytest.mark.parametrize("radius", [0.6, 1.5, 2.5])
def test_defocus_psf_is_the_disc_area(radius):
    k = D.defocus_psf(radius)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    r, n = k.shape[0] // 2, 8
    oracle = np.zeros_like(k)
    for row in range(k.shape[0]):
        for col in range(k.shape[1]):
            for i in range(n):
                for j in range(n):
                    y, x = row - r + (i + 0.5) / n - 0.5, col - r + (j + 0.5) / n - 0.5
                    oracle[row, col] += y * y + x * x <= radius * radius
    assert np.allclose(k, oracle / oracle.sum(), atol=1e-12)
    assert np.allclose(k, k[::-1]) and np.allclose(k, k.T)


def test_blur_families_are_drawn_with_their_weights_and_are_deterministic():
    gen = D.BlurFamilyGenerator()
    recipes = [gen.sample(D.sample_rng(5, 0, i)) for i in range(400)]
    counts = {f: sum(r.family == f for r in recipes) for f in D.BLUR_FAMILIES}
    for family, weight in gen.config.families:
        assert abs(counts[family] / 400 - weight) < 0.07, (family, counts)
    again = gen.sample(D.sample_rng(5, 0, 7))
    first = recipes[7]
    assert first.family == again.family and first.noise_seed == again.noise_seed
    assert all(np.array_equal(a, b) for a, b in zip(first.kernels, again.kernels))
    for r in recipes:
        assert all(k.sum() == pytest.approx(1.0) for k in r.kernels)
        if r.family == "varying":
            assert len(r.kernels) > 1 and r.centres.shape == (len(r.kernels), 2)
        elif r.family == "linear":
            assert 2.9 <= np.sqrt(12 * (np.linalg.eigvalsh(_cov(r.kernels[0]))[1] - 1 / 6)) <= 25.5
        elif r.family == "sharp":
            assert r.kernels[0].shape == (1, 1)
        assert 1.8 <= r.gamma <= 2.4 and r.noise_sigma <= 0.015
        assert r.jpeg_quality is None or 60 <= r.jpeg_quality <= 95


def _cov(k):
    r = k.shape[0] // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])


def test_saturated_highlights_clip_in_blur_and_target():
    gen = D.BlurFamilyGenerator()
    recipe = D.BlurRecipe([D.linear_motion_psf(6.0, 0.0)], gamma=2.2, gain=3.0)
    R = recipe.radius
    img = np.full((20 + 2 * R, 40 + 2 * R, 3), 0.2)
    img[:, 20 + R:] = 0.9  # a bright half: saturated after the gain
    blur = gen.render(recipe, img)
    sharp = gen.sharp_target(recipe, (img[R:-R, R:-R] * 255).round().astype(np.uint8))
    assert sharp.dtype == np.float32 and np.all(sharp[:, 25:] == 1.0)  # clipped in the target too
    assert np.all(blur[:, 30:] == 1.0) and blur[:, 5].max() < 1.0
    # brighter than the linear-light average of 0.2 and 0.9 before the clip: highlights stay saturated
    assert np.allclose(blur[:, 10], sharp[:, 10], atol=1 / 255)
    plain = D.BlurRecipe([np.ones((1, 1))])
    stored = (img[R:-R, R:-R] * 255).round().astype(np.uint8)
    assert gen.sharp_target(plain, stored) is stored  # no gain: exactly the stored pixels


def test_shot_noise_and_jpeg_are_deterministic_per_recipe():
    gen = D.BlurFamilyGenerator()
    img = D.scene(np.random.default_rng(4), 48, 48) / 255.0
    recipe = D.BlurRecipe([np.ones((1, 1))], gamma=2.2, poisson_peak=500.0, noise_seed=3, jpeg_quality=70)
    a, b = gen.render(recipe, img), gen.render(recipe, img)
    assert np.array_equal(a, b)
    clean = gen.render(D.BlurRecipe([np.ones((1, 1))], gamma=2.2), img)
    assert 0.005 < np.abs(a - clean).mean() < 0.1
    jpeg = D.jpeg_roundtrip((clean * 255).round().astype(np.uint8), 70)
    assert jpeg.shape == (48, 48, 3) and jpeg.dtype == np.uint8 and not np.array_equal(jpeg, (clean * 255).round())


def test_scenes_are_deterministic_per_seed_and_varied():
    a = D.scene(np.random.default_rng(11), 64, 80)
    assert a.shape == (64, 80, 3) and a.dtype == np.uint8
    assert np.array_equal(a, D.scene(np.random.default_rng(11), 64, 80))
    others = [D.scene(np.random.default_rng(s), 64, 80) for s in range(12, 16)]
    assert all(np.abs(a.astype(int) - o).mean() > 10 for o in others)
    assert all(len(np.unique(o.reshape(-1, 3), axis=0)) > 20 for o in [a] + others)  # not flat
    with pytest.raises(ValueError, match="height and width"):
        D.scene(np.random.default_rng(0), 0, 5)


def test_dataset_mixes_scenes_and_photos_deterministically(sharp_folder):
    folder, _ = sharp_folder
    ds = D.SyntheticBlurDataset(folder, crop=48, seed=3, generator=D.BlurFamilyGenerator(), scenes=0.5, repeat=8)
    samples = [ds[i] for i in range(len(ds))]
    names = [s["name"] for s in samples]
    assert any(n.startswith("scene-") for n in names) and any(n.endswith(".png") for n in names)
    again = ds[5]
    assert torch.equal(again["blur"], samples[5]["blur"]) and torch.equal(again["sharp"], samples[5]["sharp"])
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["blur"], samples[5]["blur"])
    for s in samples:
        assert s["blur"].shape == s["sharp"].shape == (3, 48, 48)
    with pytest.raises(ValueError, match="scenes must be a fraction"):
        D.SyntheticBlurDataset(folder, crop=48, scenes=1.5)
