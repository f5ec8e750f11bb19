"""Tests of the restoration task and data of IR-NAS (Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical
Neural Architecture Search for Image Restoration"): degradations, torch SSIM against scikit-image on real
photographs, PSNR by hand, the MSE + λ·log10(1/SSIM) loss, the BSD500 / Rain100 folder readers on
fixtures, and the proxy builder. CPU only, tiny images."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from densenas.datasets.imagefolder import (PROXY_TRAIN_SOURCES, PROXY_VAL_SOURCES, RESTORATION_MANIFEST,
                                           CleanImageFolder, RainPairFolder, build_proxy_restoration)
from densenas.datasets.proxy import load_source_images
from densenas.datasets.restore_fixtures import write_bsd_fixture, write_rain100_fixture
from densenas.tasks.restoration.functional import (BSD500_SIGMAS, RestorationSpec, add_gaussian_noise, add_rain,
                                        evaluate_restoration, motion_blur_kernel, psnr, psnr_ssim, rain_streaks,
                                        restoration_loss, restoration_reward, restoration_score_fn,
                                        ssim)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Three real 48x64 crops (astronaut, coffee, chelsea) as (3, 3, 48, 64) in [0, 1]."""
    keys = ("skimage:astronaut", "skimage:coffee", "skimage:chelsea")
    imgs = load_source_images(keys)
    assert set(imgs) == set(keys)
    crops = [imgs[k][100:148, 150:214] for k in keys]
    return torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------ degradations
@pytest.mark.parametrize("sigma", BSD500_SIGMAS)
def test_gaussian_noise_statistics(sigma):
    clean = torch.full((2, 3, 64, 64), 0.5)
    noisy = add_gaussian_noise(clean, sigma, torch.Generator().manual_seed(0))
    noise = noisy - clean
    assert abs(noise.std().item() - sigma / 255) < 0.03 * sigma / 255
    assert abs(noise.mean().item()) < 0.1 * sigma / 255
    assert torch.equal(noisy, add_gaussian_noise(clean, sigma, torch.Generator().manual_seed(0)))
    assert not torch.equal(noisy, add_gaussian_noise(clean, sigma, torch.Generator().manual_seed(1)))
    edge = torch.full((1, 1, 32, 32), 0.97)
    assert (add_gaussian_noise(edge, sigma, torch.Generator().manual_seed(0)) > 1).any()  # BSD500: no clip
    clipped = add_gaussian_noise(edge, sigma, torch.Generator().manual_seed(0), clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_gaussian_noise_rejects_negative_sigma():
    with pytest.raises(ValueError, match="sigma"):
        add_gaussian_noise(torch.zeros(1, 1, 4, 4), -1)


def test_motion_blur_kernel_is_a_normalised_line():
    k = motion_blur_kernel(9, 0.0)
    assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-6
    assert (k[:, 4] > 0).all() and k[:, :3].sum() == 0  # vertical line through the centre
    k45 = motion_blur_kernel(9, 45.0)
    assert k45[2, 2] > 0 and k45[6, 6] > 0 and k45[2, 6] == 0 and k45[6, 2] == 0  # main diagonal


def test_rain_is_deterministic_bright_and_oriented(photos):
    rainy = add_rain(photos, seed=3)
    assert torch.equal(rainy, add_rain(photos, seed=3))
    assert not torch.equal(rainy, add_rain(photos, seed=4))
    assert rainy.min() >= 0 and rainy.max() <= 1 and (rainy >= photos - 1e-6).all()
    assert (rainy - photos).mean() > 0.005
    assert add_rain(photos[0], seed=3).shape == photos[0].shape
    layer = rain_streaks(64, 64, np.random.default_rng(0), density=0.02, length=15, angle=0.0, intensity=0.8)
    assert abs(layer.max() - 0.8) < 1e-5
    vertical = np.abs(np.diff(layer, axis=0)).mean()
    horizontal = np.abs(np.diff(layer, axis=1)).mean()
    assert vertical < 0.5 * horizontal  # streaks run along the rain direction


# ----------------------------------------------------------------------------------------- SSIM, PSNR
def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(structural_similarity(a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
                                       data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


@pytest.mark.parametrize("degrade", ["noise30", "noise70", "rain", "blur"])
def test_torch_ssim_matches_skimage_on_real_images(photos, degrade):
    if degrade.startswith("noise"):
        other = add_gaussian_noise(photos, int(degrade[5:]), torch.Generator().manual_seed(0)).clamp(0, 1)
    elif degrade == "rain":
        other = add_rain(photos, seed=1)
    else:
        other = torch.nn.functional.avg_pool2d(photos, 3, stride=1, padding=1, count_include_pad=False)
    per_image = ssim(other, photos, reduction="none")
    for i in range(len(photos)):
        assert abs(per_image[i].item() - _skimage_ssim(other[i], photos[i])) < 1e-3
    assert abs(ssim(other, photos).item() - psnr_ssim(other, photos)["ssim"]) < 1e-3
    assert ssim(photos, photos).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_is_differentiable_and_validates(photos):
    pred = photos.clone().mul(0.9).requires_grad_(True)
    ssim(pred, photos).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16))


def test_psnr_by_hand():
    target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.6 + 0.2
    pred = target + 0.1  # MSE = 0.01 -> PSNR = 10 * log10(1 / 0.01) = 20 dB
    m = psnr_ssim(pred, target)
    assert m["psnr"] == pytest.approx(20.0, abs=1e-6)
    assert torch.allclose(psnr(pred, target), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-6)
    noisy = target.clone()
    noisy[0, 0, 0, 0] += 0.1  # one pixel off in image 0, image 1 exact (capped)
    expected0 = 10 * math.log10(1 / (0.01 / (3 * 16 * 16)))
    assert psnr_ssim(noisy, target, max_psnr=100.0)["psnr"] == pytest.approx((expected0 + 100.0) / 2, abs=1e-5)
    gray = psnr_ssim(pred[:, :1], target[:, :1])
    assert gray["psnr"] == pytest.approx(20.0, abs=1e-6) and 0 < gray["ssim"] < 1
    assert restoration_reward(m) == m["psnr"] and restoration_reward(m, "ssim") == m["ssim"]
    with pytest.raises(KeyError):
        restoration_reward(m, "lpips")


def test_loss_decreases_as_prediction_approaches_target(photos):
    noisy = add_gaussian_noise(photos, 50, torch.Generator().manual_seed(0))
    losses = [restoration_loss(photos + t * (noisy - photos), photos, lam=0.1).item()
              for t in (1.0, 0.75, 0.5, 0.25, 0.1, 0.0)]
    assert all(a > b for a, b in zip(losses, losses[1:])) and losses[-1] == pytest.approx(0.0, abs=1e-6)
    mse = torch.mean((noisy - photos) ** 2).item()
    expected = mse + 0.5 * math.log10(1.0 / ssim(noisy, photos).item())
    assert restoration_loss(noisy, photos, lam=0.5).item() == pytest.approx(expected, rel=1e-5)
    assert restoration_loss(noisy, photos, lam=0.0).item() == pytest.approx(mse, rel=1e-6)


def test_task_and_evaluation(photos):
    task = RestorationSpec("denoise", sigma=30, lam=0.1)
    a, b = task.degrade(photos, seed=0), task.degrade(photos, seed=0)
    assert torch.equal(a, b) and abs((a - photos).std().item() - 30 / 255) < 0.01
    metrics = evaluate_restoration(torch.nn.Identity(), a, photos, batch_size=2)
    assert metrics == pytest.approx(psnr_ssim(a, photos))
    assert task.reward(metrics) == metrics["psnr"] and task.loss(a, photos).item() > 0
    reward, m = restoration_score_fn("ssim", batch_size=2)(torch.nn.Identity(), (a, photos))
    assert m == pytest.approx(metrics) and reward == m["ssim"]
    rain = RestorationSpec("derain", reward_metric="ssim")
    assert torch.equal(rain.degrade(photos, seed=2), add_rain(photos, 2))
    with pytest.raises(ValueError, match="kind"):
        RestorationSpec("deblur")


# ---------------------------------------------------------------------------------------- folder readers
def test_clean_image_folder_reads_bsd_layout(tmp_path):
    info = write_bsd_fixture(tmp_path / "bsd", {"train": 3, "val": 2, "test": 1}, size=(24, 32))
    ds = CleanImageFolder(tmp_path / "bsd", "train")
    assert len(ds) == 3 and [p.name for p in ds.files] == sorted(info["splits"]["train"])
    img = ds[0]
    assert img.shape == (3, 24, 32) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    x = ds.load_arrays(16, max_items=2)
    assert x.shape == (2, 3, 16, 16)
    assert torch.allclose(x[0], img[:, 4:20, 8:24])  # center crop, no resampling
    assert ds.load_arrays((40, 20)).shape == (3, 3, 40, 20)  # too small: upscaled, then cropped
    assert ds.load_arrays(8, mode="resize").shape == (3, 3, 8, 8)
    gray = CleanImageFolder(tmp_path / "bsd", "val", channels=1)
    assert gray.load_arrays(12).shape == (2, 1, 12, 12)
    # the original BSR archive layout is found as well
    write_bsd_fixture(tmp_path / "bsr" / "BSR" / "BSDS500" / "data", {"test": 2}, ext="png")
    assert len(CleanImageFolder(tmp_path / "bsr", "test")) == 2


def test_clean_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        CleanImageFolder(tmp_path / "nope")
    write_bsd_fixture(tmp_path / "bsd", {"train": 1})
    with pytest.raises(FileNotFoundError, match=r"images/val"):
        CleanImageFolder(tmp_path / "bsd", "val")
    (tmp_path / "bsd" / "images" / "empty").mkdir()
    (tmp_path / "bsd" / "images" / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"images/empty holds no images"):
        CleanImageFolder(tmp_path / "bsd", "empty")
    bad = tmp_path / "bsd" / "images" / "train" / "000broken.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = CleanImageFolder(tmp_path / "bsd", "train")
    with pytest.raises(ValueError, match=r"000broken\.jpg: unreadable image"):
        ds.load_arrays(8)
    with pytest.raises(ValueError, match="channels"):
        CleanImageFolder(tmp_path / "bsd", "train", channels=2)
    with pytest.raises(ValueError, match="mode"):
        ds.load_arrays(8, mode="stretch")


@pytest.mark.parametrize("layout, split", [("subfolders", "train"), ("prefixed", "test"), ("prefixed", None)])
def test_rain_pair_folder_layouts(tmp_path, layout, split):
    info = write_rain100_fixture(tmp_path / "rain100", n=3, size=(24, 32), split=split, layout=layout)
    ds = RainPairFolder(tmp_path / "rain100", split)
    assert len(ds) == 3 and ds.layout == layout
    assert [str(p) for p in ds.rain] == info["rain"] and [str(p) for p in ds.clean] == info["clean"]
    rainy, clean = ds[1]
    assert rainy.shape == clean.shape == (3, 24, 32)
    assert (rainy >= clean - 1 / 255 - 1e-6).all() and (rainy - clean).mean() > 0  # streaks only brighten
    r, c = ds.load_arrays(16, max_items=2)
    assert r.shape == c.shape == (2, 3, 16, 16) and torch.allclose(r[1], rainy[:, 4:20, 8:24])


def test_rain_pair_folder_matches_rain100_names(tmp_path):
    folder = tmp_path / "r" / "test"
    write_rain100_fixture(tmp_path / "r", n=2, split="test", layout="subfolders")
    for k in (1, 2):  # Rain100L naming: rain/norain-<k>x2.png next to norain/norain-<k>.png
        (folder / "rain" / f"{k}.png").rename(folder / "rain" / f"norain-{k}x2.png")
        (folder / "norain" / f"{k}.png").rename(folder / "norain" / f"norain-{k}.png")
    ds = RainPairFolder(tmp_path / "r", "test")
    assert [(a.name, b.name) for a, b in zip(ds.rain, ds.clean)] == [("norain-1x2.png", "norain-1.png"),
                                                                     ("norain-2x2.png", "norain-2.png")]


def test_rain_pair_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        RainPairFolder(tmp_path / "none")
    write_rain100_fixture(tmp_path / "r", n=2, split="train", layout="prefixed")
    with pytest.raises(FileNotFoundError, match=r"r/val not found"):
        RainPairFolder(tmp_path / "r", "val")
    (tmp_path / "r" / "train" / "norain-2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"rain-2\.png has no clean partner"):
        RainPairFolder(tmp_path / "r", "train")
    (tmp_path / "r" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no rain images"):
        RainPairFolder(tmp_path / "r", "empty")
    write_rain100_fixture(tmp_path / "m", n=1, split="train", layout="subfolders", size=(20, 20))
    write_rain100_fixture(tmp_path / "m2", n=1, split="train", layout="subfolders", size=(24, 20))
    os.replace(tmp_path / "m2" / "train" / "norain" / "1.png", tmp_path / "m" / "train" / "norain" / "1.png")
    with pytest.raises(ValueError, match=r"rain/1\.png is \(20, 20\) but its clean partner"):
        RainPairFolder(tmp_path / "m", "train")[0]


# ------------------------------------------------------------------------------------------ proxy builder
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_proxy_restoration_is_deterministic_idempotent_and_readable(tmp_path):
    kw = dict(num_train=4, num_val=2, size=32, seed=5, rain=True)
    m1 = build_proxy_restoration(tmp_path / "a", **kw)
    m2 = build_proxy_restoration(tmp_path / "b", **kw)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")  # byte-identical
    assert not set(m1["sources"]["train"]) & set(m1["sources"]["val"])  # held-out photographs
    assert set(m1["sources"]["train"]) <= set(PROXY_TRAIN_SOURCES)
    assert set(m1["sources"]["val"]) <= set(PROXY_VAL_SOURCES)
    stamp = (tmp_path / "a" / RESTORATION_MANIFEST).stat().st_mtime_ns
    first = tmp_path / "a" / m1["files"]["train"][0]
    first_stamp = first.stat().st_mtime_ns
    assert build_proxy_restoration(tmp_path / "a", **kw) == m2
    assert (tmp_path / "a" / RESTORATION_MANIFEST).stat().st_mtime_ns == stamp
    assert first.stat().st_mtime_ns == first_stamp  # nothing rewritten
    clean = CleanImageFolder(tmp_path / "a", "train").load_arrays(32)
    assert clean.shape == (4, 3, 32, 32) and clean.std() > 0.02
    rainy, pairs = RainPairFolder(tmp_path / "a" / "derain", "val").load_arrays(32)
    assert rainy.shape == (2, 3, 32, 32)
    assert torch.equal(pairs, CleanImageFolder(tmp_path / "a", "val").load_arrays(32))
    assert (rainy - pairs).mean() > 0
    # new parameters regenerate and remove stale files; a different seed gives different crops
    m3 = build_proxy_restoration(tmp_path / "a", num_train=2, num_val=1, size=32, seed=6)
    assert len(CleanImageFolder(tmp_path / "a", "train")) == 2 and m3["params"]["seed"] == 6
    assert not (tmp_path / "a" / "derain" / "train" / "rain" / "proxy_00000.png").exists()
    assert not torch.equal(CleanImageFolder(tmp_path / "a", "train").load_arrays(32), clean[:2])
    with pytest.raises(ValueError, match="size"):
        build_proxy_restoration(tmp_path / "c", size=8)
    with pytest.raises(ValueError, match="some samples"):
        build_proxy_restoration(tmp_path / "c", num_train=0, num_val=0)
