"""Depth data: the proxy depth set is exact (every pixel's depth is the plane it was painted from, occlusions
follow the depths), deterministic and in mmseg's NYU layout; the NYU reader names the file and field of bad
input; the real Middlebury sample converts disparity to depth with its calibration."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from densenas.datasets.depth_proxy import DEPTH_MANIFEST_NAME, GROUND, WALL, build_proxy_nyu, render_scene
from densenas.datasets.nyu import MOTORCYCLE_CALIB, NYUDepthFolder, motorcycle_depth, write_motorcycle_fixture, \
    write_nyu_pair

H, W = 48, 64


def _analytic(params: dict, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Floor and wall depth of every pixel from the camera parameters alone (pinhole model)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    dy = (v - params["cy"]) / params["focal_px"]
    t = params["pitch_rad"]
    down = dy * math.cos(t) + math.sin(t)
    ground = np.where(down > 1e-9, params["height_m"] / np.maximum(down, 1e-9), np.inf)
    wall = params["wall_m"] / (math.cos(t) - dy * math.sin(t))
    return ground, wall


@pytest.mark.parametrize("i", range(6))
def test_every_pixel_has_the_depth_of_its_plane(i):
    img, depth, surface, p = render_scene(np.random.default_rng([0, i]), H, W)
    ground, wall = _analytic(p, H, W)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and 2 <= len(p["layers_m"]) <= 4
    np.testing.assert_allclose(depth[surface == GROUND], ground[surface == GROUND], rtol=1e-12)
    np.testing.assert_allclose(depth[surface == WALL], wall[surface == WALL], rtol=1e-12)
    for k, z in enumerate(p["layers_m"]):
        assert np.all(depth[surface == 2 + k] == z)
    # z-buffer: the visible surface is never behind the floor or the wall; the layers are painted far to near
    assert np.all(depth <= np.minimum(ground, wall) + 1e-9)
    assert np.all(surface[depth < np.minimum(ground, wall) - 1e-9] >= 2)
    assert p["layers_m"] == sorted(p["layers_m"], reverse=True)
    assert 0.5 < depth.min() and depth.max() < 10.0


def test_a_layer_is_hidden_where_the_floor_is_nearer():
    """Across scenes, some layer pixels lose the depth test against the floor (occlusion by the ground)."""
    hidden = 0
    for i in range(20):
        _, depth, surface, p = render_scene(np.random.default_rng([1, i]), H, W)
        ground, _ = _analytic(p, H, W)
        for z in p["layers_m"]:
            hidden += int(np.sum((ground < z) & (surface == GROUND)))
    assert hidden > 0


def test_texture_scale_falls_with_depth():
    """A layer's image size is its physical size times focal / depth: nearer layers cover more pixels on
    average (the same size range at every depth)."""
    near, far = [], []
    for i in range(40):
        _, _, surface, p = render_scene(np.random.default_rng([2, i]), H, W)
        for k, z in enumerate(p["layers_m"]):
            (near if z < 2.5 else far if z > 4.0 else []).append(int(np.sum(surface == 2 + k)))
    assert np.mean(near) > 2 * np.mean(far)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy_nyu")
    return root, build_proxy_nyu(root, num_train=6, num_test=3, height=H, width=W, seed=3)


def test_proxy_files_match_their_scenes_exactly(proxy):
    root, manifest = proxy
    assert manifest["splits"] == {"train": 6, "test": 3}
    for split in ("train", "test"):
        folder = NYUDepthFolder(root, split)
        assert len(folder) == manifest["splits"][split]
        for i, scene in enumerate(s for s in manifest["scenes"] if s["split"] == split):
            _, depth, _, _ = render_scene(np.random.default_rng(scene["rng"]), H, W)
            stored = folder.read_depth(i)
            assert folder.images[i].stem == scene["id"]
            assert np.abs(stored - depth).max() <= 0.0005 + 1e-6  # millimetre PNG: exact to 0.5 mm
    lo, hi = manifest["depth_range_m"]
    assert 0.5 < lo < hi < 10.0


def test_proxy_reused_then_rebuilt_when_params_change(proxy):
    root, manifest = proxy
    stamp = (root / "annotations/train/proxy_000000.png").stat().st_mtime_ns
    assert build_proxy_nyu(root, num_train=6, num_test=3, height=H, width=W, seed=3) == manifest
    assert (root / "annotations/train/proxy_000000.png").stat().st_mtime_ns == stamp
    other = root.parent / "rebuilt"
    build_proxy_nyu(other, num_train=2, num_test=1, height=H, width=W, seed=3)
    m2 = build_proxy_nyu(other, num_train=3, num_test=1, height=H, width=W, seed=4)
    assert m2["params"]["seed"] == 4 and len(NYUDepthFolder(other, "train")) == 3
    assert json.loads((other / DEPTH_MANIFEST_NAME).read_text())["params"]["num_train"] == 3


def test_load_arrays_normalises_and_keeps_metres(proxy):
    root, _ = proxy
    x, d = NYUDepthFolder(root, "train").load_arrays((H // 2, W // 2), max_items=4)
    assert x.shape == (4, 3, H // 2, W // 2) and d.shape == (4, 1, H // 2, W // 2)
    assert -3 < float(x.mean()) < 3 and float(d.min()) > 0.5 and float(d.max()) < 10


def test_motorcycle_depth_follows_the_middlebury_calibration(tmp_path):
    import skimage.data

    _, _, disp = skimage.data.stereo_motorcycle()
    image, depth = motorcycle_depth()
    c = MOTORCYCLE_CALIB
    y, x = np.argwhere(np.isfinite(disp))[1000]
    assert depth[y, x] == pytest.approx(c["focal_px"] * c["baseline_mm"] / (disp[y, x] + c["doffs_px"]) / 1000)
    assert np.all(depth[~np.isfinite(disp)] == 0) and (depth == 0).any()
    valid = depth[depth > 0]
    assert 1.0 < valid.min() and valid.max() < 10.0 and image.shape == depth.shape + (3,)
    root = write_motorcycle_fixture(tmp_path, splits=("test",), size=(60, 80))
    stored = NYUDepthFolder(root, "test").read_depth(0)
    assert stored.shape == (60, 80) and (stored == 0).any() and 1.0 < stored[stored > 0].min()


def _pair(root, split="train", name="room_0001", h=8, w=10):
    return write_nyu_pair(root, split, name, np.zeros((h, w, 3), np.uint8), np.full((h, w), 2.0))


def test_bad_depth_png_is_named(tmp_path):
    import cv2

    _, dep = _pair(tmp_path)
    cv2.imwrite(str(dep), np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"room_0001\.png: depth PNG must be 16-bit single-channel.*uint8"):
        NYUDepthFolder(tmp_path, "train").read_depth(0)
    cv2.imwrite(str(dep), np.zeros((8, 10, 3), np.uint16))
    with pytest.raises(ValueError, match=r"room_0001\.png.*uint16 with 3 channel"):
        NYUDepthFolder(tmp_path, "train").read_depth(0)
    cv2.imwrite(str(dep), np.zeros((8, 12), np.uint16))
    with pytest.raises(ValueError, match=r"room_0001\.png: depth size 12x8 \(WxH\) differs from its image.*10x8"):
        NYUDepthFolder(tmp_path, "train").load_arrays(8)


def test_missing_pairs_and_folders_are_named(tmp_path):
    img, dep = _pair(tmp_path)
    dep.unlink()
    with pytest.raises(FileNotFoundError, match=r"room_0001\.jpg: no depth map .*room_0001\.png"):
        NYUDepthFolder(tmp_path, "train")
    _pair(tmp_path)
    _pair(tmp_path, name="room_0002")
    img.unlink()
    with pytest.raises(FileNotFoundError, match=r"room_0001\.png: no image"):
        NYUDepthFolder(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"images/test: split folder missing"):
        NYUDepthFolder(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NYUDepthFolder(tmp_path / "nowhere", "train")


def test_writer_refuses_names_mmseg_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="need a digit"):
        _pair(tmp_path, name="room")
    with pytest.raises(ValueError, match="differ in size"):
        write_nyu_pair(tmp_path, "train", "a_1", np.zeros((4, 4, 3), np.uint8), np.ones((4, 5)))
