"""A deterministic proxy monocular-depth set made from real photographs, in the NYU Depth V2 layout.

NYU Depth V2 (Silberman et al., ECCV 2012) cannot be downloaded here, so the depth search's proxy task uses
scenes rendered with a pinhole camera whose every pixel's depth is known exactly (z-depth along the optical
axis, as NYU stores it):

* a **slanted ground plane**: a camera ``h`` metres above the floor, pitched down by ``theta``, focal
  length ``f`` pixels: the ray through row ``v`` meets the floor at depth ``h / (dy cos(theta) + sin(theta))``
  with ``dy = (v - cy) / f``; textured with a real photograph (grass, gravel, brick) in floor coordinates,
  so its texture shrinks with distance as it does in a photograph;
* a **far back wall** (a vertical plane ``D`` metres ahead): depth ``D / (cos(theta) - dy sin(theta))``,
  textured with another photograph in wall coordinates;
* 2-4 **fronto-parallel layers** at known depths ``z_k``: shapes (ellipse, polygon, rectangle) cut from real
  photographs, standing on the floor, whose size and texture scale are ``1 / z_k`` (a fixed physical size
  and texel density), painted far to near with a depth test (a z-buffer), so occlusions are consistent
  with the depths: a layer half behind the floor is hidden where the floor is nearer.

Depth stays within 0.5-10 m, as in NYU. The output is the NYU layout read by
:class:`densenas.datasets.nyu.NYUDepthFolder` and by mmseg's ``NYUDataset``::

    root/images/{train,test}/proxy_<i>.jpg
    root/annotations/{train,test}/proxy_<i>.png      uint16 millimetres
    root/densenas_proxy_depth.json                  manifest: build parameters, sources, scene summaries

Scene ``i`` is :func:`render_scene` of ``numpy.random.default_rng([seed, i])``, so any one scene can be
re-rendered (with its surface map) to check the files.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .nyu import depth_to_png, write_nyu_pair
from .proxy import load_source_images, read_manifest, shape_mask

__all__ = ["build_proxy_nyu", "render_scene", "DEPTH_MANIFEST_NAME", "GROUND", "WALL", "scene_sources"]

DEPTH_MANIFEST_NAME = "densenas_proxy_depth.json"
FORMAT_VERSION = 1
ID_PREFIX = "proxy_"
GROUND, WALL = 0, 1  # surface ids of render_scene's surface map; layer k is 2 + k

GROUND_SOURCES = ("skimage:grass", "skimage:gravel", "skimage:brick")
WALL_SOURCES = ("skimage:brick", "skimage:page", "sklearn:china.jpg", "matplotlib:grace_hopper.jpg",
                "skimage:astronaut")
OBJECT_SOURCES = ("skimage:coffee", "skimage:chelsea", "skimage:rocket", "skimage:coins",
                  "skimage:immunohistochemistry", "sklearn:flower.jpg", "skimage:hubble_deep_field",
                  "skimage:retina", "skimage:camera", "skimage:moon")
TEXELS_PER_M = 90.0      # floor / wall texture density
OBJECT_TEXELS_PER_M = 160.0
TEXTURE_SIDE = 256       # texture photographs are rescaled to this shorter side before tiling
FOV_DEG = 60.0           # horizontal field of view (NYU's Kinect: about 57-62 degrees)


def scene_sources() -> dict[str, list[str]]:
    """The source photographs that load offline, by role (``ground``, ``wall``, ``object``).

    Raises:
        RuntimeError: no photograph of some role loads.
    """
    loaded = load_source_images(tuple(dict.fromkeys(GROUND_SOURCES + WALL_SOURCES + OBJECT_SOURCES)))
    out = {"ground": [k for k in GROUND_SOURCES if k in loaded], "wall": [k for k in WALL_SOURCES if k in loaded],
           "object": [k for k in OBJECT_SOURCES if k in loaded]}
    for role, keys in out.items():
        if not keys:
            raise RuntimeError(f"no {role} photograph of {globals()[role.upper() + '_SOURCES']} loads offline")
    return out


@functools.lru_cache(maxsize=None)
def _pyramid(key: str) -> list[np.ndarray]:
    """A texture photograph at ``TEXTURE_SIDE`` and three halvings (float32 HxWx3), for distance-aware
    sampling: a far floor pixel covers many texels, so it reads a coarser level (like mip-mapping)."""
    arr = load_source_images((key,))[key]
    h, w = arr.shape[:2]
    s = TEXTURE_SIDE / min(h, w)
    img = Image.fromarray(arr).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    levels = []
    for i in range(4):
        lw, lh = max(1, img.width >> i), max(1, img.height >> i)
        levels.append(np.asarray(img.resize((lw, lh), Image.Resampling.BOX), np.float32))
    return levels


def _sample_texture(levels: list[np.ndarray], a: np.ndarray, b: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Texels at plane coordinates ``(a, b)`` (texels; tiled by mirroring) from the level that fits
    ``footprint`` (texels per pixel)."""
    lvl = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0))), 0, len(levels) - 1).astype(int)
    out = np.zeros(a.shape + (3,), np.float32)
    for i, tex in enumerate(levels):
        m = lvl == i
        if not m.any():
            continue
        th, tw = tex.shape[:2]
        r = np.floor(a[m] / 2 ** i).astype(np.int64) % (2 * th)
        c = np.floor(b[m] / 2 ** i).astype(np.int64) % (2 * tw)
        r = np.where(r < th, r, 2 * th - 1 - r)  # mirrored tiling: no seams
        c = np.where(c < tw, c, 2 * tw - 1 - c)
        out[m] = tex[r, c]
    return out


def render_scene(rng: np.random.Generator, height: int = 96, width: int = 128, max_depth: float = 10.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one scene (see the module docstring).

    Args:
        rng: the scene's generator (the builder uses ``default_rng([seed, i])``).
        height, width: image size in pixels.
        max_depth: every depth is below this (scenes are redrawn until they are).

    Returns:
        ``(image HxWx3 uint8, depth HxW float64 metres, surface HxW int (GROUND, WALL or 2 + layer), params)``
        where ``params`` holds the camera (``focal_px``, ``cx``, ``cy``, ``height_m``, ``pitch_rad``), the
        wall distance ``wall_m`` and the layer depths ``layers_m`` (far to near).
    """
    src = scene_sources()
    f = width / (2.0 * math.tan(math.radians(FOV_DEG) / 2.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = (u - cx) / f, (v - cy) / f
    while True:
        cam_h, pitch = rng.uniform(1.0, 1.6), math.radians(rng.uniform(6.0, 20.0))
        wall = rng.uniform(4.5, 7.5)
        down = dy * math.cos(pitch) + math.sin(pitch)            # world-down component of the ray
        fwd = math.cos(pitch) - dy * math.sin(pitch)             # world-forward component (> 0 here)
        ground = np.where(down > 1e-9, cam_h / np.maximum(down, 1e-9), np.inf)
        wall_d = wall / fwd
        depth = np.minimum(ground, wall_d)
        surface = np.where(ground <= wall_d, GROUND, WALL)
        if depth.max() < max_depth * 0.98:
            break
    g_key = src["ground"][int(rng.integers(len(src["ground"])))]
    w_key = src["wall"][int(rng.integers(len(src["wall"])))]
    img = np.zeros((height, width, 3), np.float32)
    # floor coordinates (X right, Z forward) and wall coordinates (X right, Y down), in texels
    gm, wm = surface == GROUND, surface == WALL
    off = rng.uniform(0, 1000, 4)
    img[gm] = _sample_texture(_pyramid(g_key), depth[gm] * fwd[gm] * TEXELS_PER_M + off[0],
                              depth[gm] * dx[gm] * TEXELS_PER_M + off[1], depth[gm] * TEXELS_PER_M / f)
    img[wm] = _sample_texture(_pyramid(w_key), depth[wm] * down[wm] * TEXELS_PER_M + off[2],
                              depth[wm] * dx[wm] * TEXELS_PER_M + off[3], depth[wm] * TEXELS_PER_M / f)
    img *= np.where(gm, 0.85, 1.0)[:, :, None]  # the floor a little darker than the wall (soft shading)
    n_layers = int(rng.integers(2, 5))
    zs = np.sort(rng.uniform(1.0, min(wall - 0.3, 6.0), n_layers))[::-1]  # painted far to near
    for k, z in enumerate(zs):
        radius_m = rng.uniform(0.25, 0.7, 2)
        rx, ry = radius_m * f / z
        # stands on the floor: its bottom is the row where the floor is at depth z
        floor_row = cy + f * (cam_h / z - math.sin(pitch)) / math.cos(pitch)
        ccx, ccy = rng.uniform(0.1, 0.9) * width, min(floor_row, height + ry) - ry
        mask = shape_mask(rng, height, width, ccx, ccy, rx, ry, int(rng.integers(0, 3))) & (z < depth)  # depth test
        o_key = src["object"][int(rng.integers(len(src["object"])))]
        photo = load_source_images((o_key,))[o_key]
        side = max(2, round(2 * max(radius_m) * OBJECT_TEXELS_PER_M))  # fixed physical texel density
        ph, pw = photo.shape[:2]
        side = min(side, ph, pw)
        y0, x0 = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
        patch_px = (max(1, round(2 * rx)), max(1, round(2 * ry)))  # its image size falls as 1 / z
        patch = np.asarray(Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize(
            patch_px, Image.Resampling.BILINEAR), np.float32)
        rows = np.clip(np.round(v - (ccy - ry)).astype(int), 0, patch.shape[0] - 1)
        cols = np.clip(np.round(u - (ccx - rx)).astype(int), 0, patch.shape[1] - 1)
        img[mask] = patch[rows[mask], cols[mask]]
        depth[mask], surface[mask] = z, 2 + k
    params = {"focal_px": f, "cx": cx, "cy": cy, "height_m": cam_h, "pitch_rad": pitch, "wall_m": wall,
              "layers_m": [float(z) for z in zs], "ground_source": g_key, "wall_source": w_key}
    return np.clip(img, 0, 255).astype(np.uint8), depth, surface, params


def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    for split, n in (manifest.get("splits") or {}).items():
        for i in manifest.get("ids", {}).get(split, []):
            if not (root / "images" / split / f"{i}.jpg").is_file() or \
                    not (root / "annotations" / split / f"{i}.png").is_file():
                return False
        if len(manifest.get("ids", {}).get(split, [])) != n:
            return False
    return bool(manifest.get("splits"))


def build_proxy_nyu(root: str | Path, num_train: int = 64, num_test: int = 24, height: int = 96,
                    width: int = 128, seed: int = 0, max_depth: float = 10.0, force: bool = False
                    ) -> dict[str, Any]:
    """Build (or reuse) the proxy depth set under ``root`` in the NYU layout.

    Idempotent: when the manifest records the same parameters and sources and every listed file exists,
    nothing is written; otherwise earlier proxy files are removed and every scene is rendered again.

    Args:
        root: output folder.
        num_train, num_test: scenes of the ``train`` / ``test`` splits.
        height, width: image size (NYU's aspect is 3:4).
        seed: scene ``i`` is rendered from ``default_rng([seed, i])``.
        max_depth: bound of every depth (metres).
        force: rebuild even when the manifest matches.

    Returns:
        The manifest (also written to ``root/densenas_proxy_depth.json``).

    Raises:
        ValueError: bad sizes or counts.
    """
    if num_train < 1 or num_test < 1:
        raise ValueError(f"need num_train >= 1 and num_test >= 1, got {num_train}, {num_test}")
    if height < 16 or width < 16:
        raise ValueError(f"height and width must be >= 16 pixels, got {height}x{width}")
    if not 1.0 < max_depth <= 65.0:
        raise ValueError(f"max_depth must be in (1, 65] metres (uint16 millimetres), got {max_depth}")
    root = Path(root)
    params = {"num_train": num_train, "num_test": num_test, "height": height, "width": width, "seed": seed,
              "max_depth": max_depth}
    ids = {"train": [f"{ID_PREFIX}{i:06d}" for i in range(num_train)],
           "test": [f"{ID_PREFIX}{i:06d}" for i in range(num_train, num_train + num_test)]}
    manifest: dict[str, Any] = {"format": "densenas_proxy_nyu", "version": FORMAT_VERSION, "params": params,
                                "sources": scene_sources(), "splits": {k: len(v) for k, v in ids.items()},
                                "ids": ids, "layout": "nyu", "depth_unit": "mm (uint16 PNG), 0 = invalid"}
    old = read_manifest(root, DEPTH_MANIFEST_NAME)
    if not force and old is not None and _complete(root, old) and all(
            old.get(k) == manifest[k] for k in ("format", "version", "params", "sources")):
        return old
    for sub, ext in (("images", "jpg"), ("annotations", "png")):
        for split in ids:
            d = root / sub / split
            d.mkdir(parents=True, exist_ok=True)
            for stale in d.glob(f"{ID_PREFIX}*.{ext}"):
                stale.unlink()
    (root / DEPTH_MANIFEST_NAME).unlink(missing_ok=True)  # written last: a crash leaves no valid manifest
    scenes, i = [], 0
    lo, hi = math.inf, 0.0
    for split in ("train", "test"):
        for sid in ids[split]:
            img, depth, _, p = render_scene(np.random.default_rng([seed, i]), height, width, max_depth)
            write_nyu_pair(root, split, sid, img, depth)
            mm = depth_to_png(depth)
            lo, hi = min(lo, float(mm.min()) / 1000), max(hi, float(mm.max()) / 1000)
            scenes.append({"id": sid, "split": split, "rng": [seed, i],
                           **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()
                              if k not in ("ground_source", "wall_source")}})
            i += 1
    manifest.update(depth_range_m=[lo, hi], scenes=scenes)
    (root / DEPTH_MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
