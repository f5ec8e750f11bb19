"""Image-folder readers for restoration (BSD500 clean images, Rain100-style pairs) and a proxy builder.

Datasets of the IR-NAS paper (Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture
Search for Image Restoration"): BSD500 for denoising (clean images; Gaussian noise is added on the fly)
and Rain100-style pairs for deraining. Layouts::

    BSD500:   root/images/{train,val,test}/<name>.jpg|png      (also root/BSR/BSDS500/data/images/...)
    Rain100:  root/<split>/rain/<name>.png + root/<split>/norain/<name>.png   (matching names), or
              root/<split>/rain-<k>.png + root/<split>/norain-<k>.png        (one folder)
              (split=None reads root itself; names match after dropping a rain-/norain- prefix and an
              "x2" suffix, as in Rain100L/H releases)

Both readers are torch ``Dataset`` s of float32 ``CHW`` tensors in ``[0, 1]`` and offer ``load_arrays``
(center crops or resizes to one size, in memory) for the search's proxy training. Every problem names
the path: a missing root/split is a ``FileNotFoundError``, an empty split or unreadable image a
``ValueError``, a rain image without its clean partner a ``FileNotFoundError``.

:func:`build_proxy_restoration` writes deterministic crops of the real photographs that ship with
installed packages (``skimage.data``, scikit-learn, matplotlib) in the BSD500 layout (and, optionally,
synthetic-rain pairs in the Rain100 layout under ``root/derain``), with a manifest making it idempotent.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .proxy import load_source_images

__all__ = ["CleanImageFolder", "RainPairFolder", "build_proxy_restoration", "RESTORATION_MANIFEST",
           "IMAGE_EXTENSIONS", "PROXY_TRAIN_SOURCES", "PROXY_VAL_SOURCES"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
RESTORATION_MANIFEST = "densenas_restoration.json"
FORMAT_VERSION = 1
ID_PREFIX = "proxy_"
BSD_LAYOUT = "root/images/<split>/*.jpg|png (BSD500; or root/BSR/BSDS500/data/images/<split>)"
RAIN_LAYOUT = ("root/<split>/rain/<name> + root/<split>/norain/<name>, or root/<split>/rain-<k>.png + "
               "root/<split>/norain-<k>.png")

# Held-out photographs: validation crops never come from a training photograph.
PROXY_TRAIN_SOURCES: tuple[str, ...] = (
    "skimage:astronaut", "skimage:coffee", "skimage:rocket", "skimage:hubble_deep_field",
    "skimage:immunohistochemistry", "skimage:retina", "skimage:camera", "skimage:coins", "skimage:brick",
    "skimage:gravel", "skimage:moon", "sklearn:china.jpg")
PROXY_VAL_SOURCES: tuple[str, ...] = (
    "skimage:chelsea", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg", "skimage:grass")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read(path: Path, channels: int) -> Image.Image:
    """Open ``path`` as RGB (``channels=3``) or luminance (``channels=1``), naming it on failure."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB" if channels == 3 else "L")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from err


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr[:, :, None] if arr.ndim == 2 else arr).permute(2, 0, 1).contiguous()


def _fit(img: Image.Image, h: int, w: int, mode: str) -> Image.Image:
    """Center-crop ``img`` to ``h x w`` (upscaling first if it is smaller), or resize it (``mode``)."""
    if mode == "resize":
        return img.resize((w, h), Image.Resampling.BICUBIC)
    if mode != "crop":
        raise ValueError(f"mode must be 'crop' or 'resize', got {mode!r}")
    if img.width < w or img.height < h:
        s = max(w / img.width, h / img.height)
        img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.Resampling.BICUBIC)
    x, y = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((x, y, x + w, y + h))


def _size(size: int | tuple[int, int], mode: str = "crop") -> tuple[int, int]:
    """Validate ``load_arrays``' size and mode before any file is read; returns ``(height, width)``."""
    if mode not in ("crop", "resize"):
        raise ValueError(f"mode must be 'crop' or 'resize', got {mode!r}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return channels


class CleanImageFolder(Dataset):
    """Clean images of one split in the BSD500 layout (denoising: degrade them on the fly).

    Args:
        root: dataset root (holding ``images/<split>``).
        split: ``train``, ``val`` or ``test``.
        channels: 3 for RGB, 1 for grayscale (luminance).

    Raises:
        FileNotFoundError: the root or its split folder is missing.
        ValueError: the split folder holds no images.
    """

    def __init__(self, root: str | Path, split: str = "train", channels: int = 3):
        self.root, self.split, self.channels = Path(root), split, _check_channels(channels)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist; expected {BSD_LAYOUT}")
        folder = self.root / "images" / split
        alt = self.root / "BSR" / "BSDS500" / "data" / "images" / split
        if not folder.is_dir() and alt.is_dir():
            folder = alt
        if not folder.is_dir():
            raise FileNotFoundError(f"split folder {folder} not found; expected {BSD_LAYOUT}")
        self.folder = folder
        self.files = _list_images(folder)
        if not self.files:
            raise ValueError(f"split folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        """The clean image ``index`` as float32 ``C x H x W`` in ``[0, 1]``."""
        return _to_tensor(_read(self.files[index], self.channels))

    def load_arrays(self, size: int | tuple[int, int], max_items: int | None = None,
                    mode: str = "crop") -> torch.Tensor:
        """The first ``max_items`` images as one float tensor ``N x C x H x W`` in ``[0, 1]``.

        Args:
            size: output side or ``(height, width)``.
            max_items: at most this many (in file-name order); ``None`` for all.
            mode: ``"crop"`` (center crop, upscaling images that are too small) or ``"resize"``.
        """
        h, w = _size(size, mode)
        n = len(self) if max_items is None else max(0, min(int(max_items), len(self)))
        out = torch.empty(n, self.channels, h, w)
        for i in range(n):
            out[i] = _to_tensor(_fit(_read(self.files[i], self.channels), h, w, mode))
        return out

    def __repr__(self) -> str:
        return f"CleanImageFolder(folder={str(self.folder)!r}, num_items={len(self)}, channels={self.channels})"


def _pair_key(path: Path) -> str:
    """Name shared by a rain image and its clean partner (drops rain-/norain- prefixes and an x2 suffix)."""
    stem = path.stem.lower()
    stem = re.sub(r"^(no)?rain[-_]", "", stem)
    return re.sub(r"x2$", "", stem)


class RainPairFolder(Dataset):
    """Rainy/clean image pairs of one split in a Rain100-style layout.

    Args:
        root: dataset root.
        split: sub-folder of ``root`` holding the split, or ``None`` to read ``root`` itself.
        channels: 3 for RGB, 1 for grayscale.

    Raises:
        FileNotFoundError: missing root/split folder, or a rain image without a clean partner.
        ValueError: no rain images in the split.
    """

    def __init__(self, root: str | Path, split: str | None = "train", channels: int = 3):
        self.root, self.split, self.channels = Path(root), split, _check_channels(channels)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist; expected {RAIN_LAYOUT}")
        folder = self.root if split is None else self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"split folder {folder} not found; expected {RAIN_LAYOUT}")
        self.folder = folder
        if (folder / "rain").is_dir() and (folder / "norain").is_dir():
            self.layout = "subfolders"
            rain, clean = _list_images(folder / "rain"), _list_images(folder / "norain")
        else:
            self.layout = "prefixed"
            files = _list_images(folder)
            rain = [p for p in files if re.match(r"^rain[-_]", p.name.lower())]
            clean = [p for p in files if re.match(r"^norain[-_]", p.name.lower())]
        if not rain:
            raise ValueError(f"split folder {folder} holds no rain images; expected {RAIN_LAYOUT}")
        by_key = {_pair_key(p): p for p in clean}
        self.rain, self.clean = [], []
        for p in rain:
            partner = by_key.get(_pair_key(p))
            if partner is None:
                where = folder / "norain" if self.layout == "subfolders" else folder
                raise FileNotFoundError(f"rain image {p} has no clean partner in {where} "
                                        f"(looked for a name matching {_pair_key(p)!r}; {RAIN_LAYOUT})")
            self.rain.append(p)
            self.clean.append(partner)

    def __len__(self) -> int:
        return len(self.rain)

    def _pair(self, index: int) -> tuple[Image.Image, Image.Image]:
        r, c = _read(self.rain[index], self.channels), _read(self.clean[index], self.channels)
        if r.size != c.size:
            raise ValueError(f"rain image {self.rain[index]} is {r.size[::-1]} but its clean partner "
                             f"{self.clean[index]} is {c.size[::-1]} (height, width)")
        return r, c

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rainy, clean)`` float32 ``C x H x W`` tensors in ``[0, 1]``."""
        r, c = self._pair(index)
        return _to_tensor(r), _to_tensor(c)

    def load_arrays(self, size: int | tuple[int, int], max_items: int | None = None,
                    mode: str = "crop") -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``max_items`` pairs as ``(rainy, clean)`` tensors ``N x C x H x W`` (same crop)."""
        h, w = _size(size, mode)
        n = len(self) if max_items is None else max(0, min(int(max_items), len(self)))
        rainy, clean = torch.empty(n, self.channels, h, w), torch.empty(n, self.channels, h, w)
        for i in range(n):
            r, c = self._pair(i)
            rainy[i], clean[i] = _to_tensor(_fit(r, h, w, mode)), _to_tensor(_fit(c, h, w, mode))
        return rainy, clean

    def __repr__(self) -> str:
        return (f"RainPairFolder(folder={str(self.folder)!r}, layout={self.layout!r}, num_items={len(self)}, "
                f"channels={self.channels})")


# ------------------------------------------------------------------------------------ proxy builder
def _crop_sample(rng: np.random.Generator, src: np.ndarray, size: int) -> np.ndarray:
    """A random ``size x size`` crop at a random down-scale, randomly flipped/rotated (HxWx3 uint8)."""
    h, w = src.shape[:2]
    scale = rng.uniform(max(size / min(h, w), 0.35), 1.0) if min(h, w) > size else size / min(h, w)
    img = Image.fromarray(src)
    if scale != 1.0:
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.LANCZOS)
    y = int(rng.integers(0, img.height - size + 1))
    x = int(rng.integers(0, img.width - size + 1))
    arr = np.asarray(img.crop((x, y, x + size, y + size)))
    if rng.integers(0, 2):
        arr = arr[:, ::-1]
    return np.ascontiguousarray(np.rot90(arr, int(rng.integers(0, 4))))


def _manifest_files(manifest: dict[str, Any]) -> list[str]:
    return [f for split in manifest["files"].values() for f in split]


def build_proxy_restoration(root: str | Path, num_train: int = 48, num_val: int = 12, size: int = 96,
                            seed: int = 0, rain: bool = False, force: bool = False) -> dict[str, Any]:
    """Build (or reuse) a proxy restoration set of real-photo crops under ``root``.

    Writes ``root/images/{train,val}/proxy_<k>.png`` (BSD500 layout, lossless) from
    :data:`PROXY_TRAIN_SOURCES` / :data:`PROXY_VAL_SOURCES` (disjoint photographs), and with ``rain``
    also ``root/derain/{train,val}/{rain,norain}/proxy_<k>.png`` (Rain100 layout, synthetic streaks from
    :func:`densenas.datasets.degrade.add_rain`). Idempotent: when ``root/densenas_restoration.json``
    records the same parameters and sources and every listed file exists, nothing is written; otherwise
    earlier proxy files are removed and all is regenerated. The same arguments give byte-identical files.

    Args:
        root: output folder (created).
        num_train: training crops.
        num_val: validation crops.
        size: crop side in pixels.
        seed: random seed of the crops and the rain.
        rain: also write synthetic-rain pairs.
        force: regenerate even when the manifest matches.

    Returns:
        The manifest (also written to ``root/densenas_restoration.json``).

    Raises:
        ValueError: bad counts or size.
        RuntimeError: no source photograph of a split could be loaded.
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train >= 0, num_val >= 0 and some samples, got {num_train}, {num_val}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    root = Path(root)
    loaded = load_source_images(PROXY_TRAIN_SOURCES + PROXY_VAL_SOURCES)
    sources = {"train": [k for k in PROXY_TRAIN_SOURCES if k in loaded],
               "val": [k for k in PROXY_VAL_SOURCES if k in loaded]}
    for split, n in (("train", num_train), ("val", num_val)):
        if n and not sources[split]:
            raise RuntimeError(f"none of the {split} source images could be loaded offline")
    params = {"num_train": num_train, "num_val": num_val, "size": size, "seed": seed, "rain": bool(rain)}
    files = {split: [f"images/{split}/{ID_PREFIX}{i:05d}.png" for i in range(n)]
             for split, n in (("train", num_train), ("val", num_val))}
    if rain:
        for split, n in (("train", num_train), ("val", num_val)):
            for sub in ("rain", "norain"):
                files[f"derain_{split}_{sub}"] = [f"derain/{split}/{sub}/{ID_PREFIX}{i:05d}.png" for i in range(n)]
    manifest: dict[str, Any] = {"format": "densenas_proxy_restoration", "version": FORMAT_VERSION,
                                "params": params, "sources": sources, "layout": "bsd500",
                                "rain_layout": "rain100_subfolders" if rain else None, "files": files}
    try:
        old = json.loads((root / RESTORATION_MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        old = None
    if not force and isinstance(old, dict) and all(old.get(k) == manifest[k] for k in
                                             ("format", "version", "params", "sources", "files")) \
            and all((root / f).is_file() for f in _manifest_files(old)):
        return old

    from .degrade import add_rain

    (root / RESTORATION_MANIFEST).unlink(missing_ok=True)  # written last: a crash leaves no valid manifest
    for split in ("train", "val"):
        dirs = [root / "images" / split, root / "derain" / split / "rain", root / "derain" / split / "norain"]
        for d in dirs:
            if d.is_dir():
                for stale in d.glob(f"{ID_PREFIX}*.png"):
                    stale.unlink()
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    for s, split in enumerate(("train", "val")):
        rng = np.random.default_rng([seed, s])
        rain_rng = np.random.default_rng([seed, s, 1])
        srcs = sources[split]
        order: list[int] = []  # every source once per round, in a shuffled order
        while len(order) < len(files[split]):
            order += rng.permutation(len(srcs)).tolist()
        for i, rel in enumerate(files[split]):
            crop = _crop_sample(rng, loaded[srcs[order[i]]], size)
            Image.fromarray(crop).save(root / rel, format="PNG")
            if rain:
                clean = torch.from_numpy(crop.astype(np.float32) / 255.0).permute(2, 0, 1)
                rainy = add_rain(clean, rain_rng)
                rdir, cdir = root / "derain" / split / "rain", root / "derain" / split / "norain"
                rdir.mkdir(parents=True, exist_ok=True)
                cdir.mkdir(parents=True, exist_ok=True)
                out = (rainy.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
                Image.fromarray(out).save(rdir / Path(rel).name, format="PNG")
                Image.fromarray(crop).save(cdir / Path(rel).name, format="PNG")
    (root / RESTORATION_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
