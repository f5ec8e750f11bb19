"""Tiny restoration datasets in the real on-disk layouts (BSD500, Rain100), for tests.

They exercise :class:`densenas.datasets.imagefolder.CleanImageFolder` and
:class:`densenas.datasets.imagefolder.RainPairFolder` (IR-NAS tasks: Zhang, Chen, Li, Shen,
"Memory-Efficient Hierarchical Neural Architecture Search for Image Restoration"). Images are smooth
random colour fields; rainy images are the clean ones with synthetic streaks
(:func:`densenas.datasets.degrade.add_rain`), so the formats are exact while the content is not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["write_bsd_fixture", "write_rain100_fixture"]


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """HxWx3 uint8: an upsampled random 4x4 colour grid plus a little noise."""
    grid = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    base = np.asarray(grid.resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.clip(base + rng.integers(-10, 11, (h, w, 3)), 0, 255).astype(np.uint8)


def write_bsd_fixture(root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (24, 32),
                      seed: int = 0, ext: str = "jpg") -> dict[str, Any]:
    """Write ``root/images/<split>/<k>.<ext>`` in the BSD500 layout.

    Args:
        root: output folder (created).
        counts: images per split; default ``{"train": 3, "val": 2, "test": 1}``.
        size: ``(height, width)`` of every image.
        seed: random seed.
        ext: ``"jpg"`` (as BSD500 ships) or ``"png"``.

    Returns:
        ``{"root", "layout": "bsd500", "splits": {split: [file names]}, "size"}``.
    """
    counts = {"train": 3, "val": 2, "test": 1} if counts is None else dict(counts)
    if ext not in ("jpg", "png"):
        raise ValueError(f"ext must be 'jpg' or 'png', got {ext!r}")
    root, rng = Path(root), np.random.default_rng(seed)
    splits: dict[str, list[str]] = {}
    for split, n in counts.items():
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        splits[split] = []
        for k in range(n):
            name = f"{100000 + 1000 * len(splits) + k}.{ext}"  # BSD500-like numeric ids
            Image.fromarray(_smooth_image(rng, *size)).save(folder / name)
            splits[split].append(name)
    return {"root": str(root), "layout": "bsd500", "splits": splits, "size": tuple(size)}


def write_rain100_fixture(root: str | Path, n: int = 3, size: tuple[int, int] = (24, 32),
                          split: str | None = "train", layout: str = "subfolders", seed: int = 0
                          ) -> dict[str, Any]:
    """Write rainy/clean pairs in a Rain100 layout.

    ``layout="subfolders"``: ``<split>/rain/<k>.png`` and ``<split>/norain/<k>.png``;
    ``layout="prefixed"``: ``<split>/rain-<k>.png`` and ``<split>/norain-<k>.png`` in one folder.
    ``split=None`` writes directly into ``root``.

    Args:
        root: output folder (created).
        n: number of pairs.
        size: ``(height, width)``.
        split: sub-folder name or ``None``.
        layout: ``"subfolders"`` or ``"prefixed"``.
        seed: random seed of the images and the rain.

    Returns:
        ``{"root", "layout", "split", "rain": [paths], "clean": [paths], "size"}``.
    """
    from .degrade import add_rain

    if layout not in ("subfolders", "prefixed"):
        raise ValueError(f"layout must be 'subfolders' or 'prefixed', got {layout!r}")
    root, rng = Path(root), np.random.default_rng(seed)
    folder = root if split is None else root / split
    rain_dir, clean_dir = (folder / "rain", folder / "norain") if layout == "subfolders" else (folder, folder)
    rain_dir.mkdir(parents=True, exist_ok=True)
    clean_dir.mkdir(parents=True, exist_ok=True)
    rains, cleans = [], []
    for k in range(1, n + 1):
        clean = _smooth_image(rng, *size)
        x = torch.from_numpy(clean.astype(np.float32) / 255.0).permute(2, 0, 1)
        rainy = (add_rain(x, rng).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        rname, cname = (f"{k}.png", f"{k}.png") if layout == "subfolders" else (f"rain-{k}.png", f"norain-{k}.png")
        Image.fromarray(rainy).save(rain_dir / rname)
        Image.fromarray(clean).save(clean_dir / cname)
        rains.append(str(rain_dir / rname))
        cleans.append(str(clean_dir / cname))
    return {"root": str(root), "layout": layout, "split": split, "rain": rains, "clean": cleans,
            "size": tuple(size)}
