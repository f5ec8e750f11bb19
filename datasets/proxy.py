"""A deterministic proxy semantic-segmentation dataset made from real photographs, in PASCAL VOC layout.

No segmentation benchmark can be downloaded here, so the search's proxy task uses scenes composed from
real images that ship inside installed wheels (``skimage.data``, ``sklearn.datasets.load_sample_images``,
matplotlib's ``sample_data``). Each foreground class is one source photograph whose texture/colour defines
the class (e.g. ``coffee``, ``cat``); each sample is a background mosaic cut from *other* photographs with
several random ellipses, polygons and rectangles pasted on top, each filled with a crop of its class's
source. Later pastes cover earlier ones and the label mask is exact because we drew it.

The output is the real VOC layout, readable by :class:`densenas.datasets.segfolder.SegmentationFolder`
and by mmseg's ``PascalVOCDataset``::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png        # palette PNG, value = class index, 255 = ignore
    root/ImageSets/Segmentation/{train,val}.txt
    root/densenas_proxy.json               # manifest: params, class names, sources, seed

Example:
    >>> manifest = build_proxy_voc("/tmp/proxy_voc")          # doctest: +SKIP
    >>> manifest["classes"][:3]                               # doctest: +SKIP
    ['background', 'coffee', 'cat']
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["PROXY_CLASSES", "MANIFEST_NAME", "FORMAT_VERSION", "voc_palette", "build_proxy_voc",
           "load_source_images"]

MANIFEST_NAME = "densenas_proxy.json"
FORMAT_VERSION = 1
ID_PREFIX = "proxy_"

# (class name, loader key); order fixes class indices 1..K. Chosen to differ in colour and texture.
CLASS_SOURCES: tuple[tuple[str, str], ...] = (
    ("coffee", "skimage:coffee"),
    ("cat", "skimage:chelsea"),
    ("tissue", "skimage:immunohistochemistry"),
    ("galaxy", "skimage:hubble_deep_field"),
    ("grass", "skimage:grass"),
    ("brick", "skimage:brick"),
    ("retina", "skimage:retina"),
    ("gravel", "skimage:gravel"),
)
# Background material: photographs not used by any class above.
BACKGROUND_SOURCES: tuple[str, ...] = (
    "skimage:astronaut", "skimage:rocket", "skimage:camera", "skimage:coins", "skimage:moon",
    "skimage:page", "skimage:text", "sklearn:china.jpg", "sklearn:flower.jpg",
    "matplotlib:grace_hopper.jpg",
)
# Optional crop box (top, left, bottom, right as fractions) focusing a class on its distinctive texture.
_FOCUS: dict[str, tuple[float, float, float, float]] = {
    "skimage:coffee": (0.1, 0.1, 0.9, 0.9),
    "skimage:chelsea": (0.05, 0.1, 1.0, 0.8),
    "skimage:retina": (0.15, 0.15, 0.85, 0.85),
}

PROXY_CLASSES: tuple[str, ...] = ("background",) + tuple(name for name, _ in CLASS_SOURCES)


def voc_palette() -> list[int]:
    """Return the standard PASCAL VOC colour map as a flat 768-long ``[r, g, b, ...]`` list.

    Index 0 is black, 1 dark red, ..., 255 is the cream used for the ignore boundary.
    """
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _load_one(key: str) -> np.ndarray | None:
    """Load one source image as HxWx3 uint8, or ``None`` when it is not available offline."""
    kind, name = key.split(":", 1)
    try:
        if kind == "skimage":
            import skimage.data

            arr = np.asarray(getattr(skimage.data, name)())
        elif kind == "sklearn":
            from sklearn.datasets import load_sample_image

            arr = np.asarray(load_sample_image(name))
        elif kind == "matplotlib":
            from matplotlib import cbook

            with cbook.get_sample_data(name) as f:
                arr = np.asarray(Image.open(f).convert("RGB"))
        else:
            raise ValueError(f"unknown source kind {kind!r} in {key!r}")
    except (ImportError, AttributeError, OSError, ValueError, RuntimeError):
        return None  # not installed, or needs a download
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


@functools.lru_cache(maxsize=None)
def load_source_images(keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named source images that are available offline (cached per process).

    Args:
        keys: loader keys such as ``"skimage:coffee"`` or ``"sklearn:china.jpg"``.

    Returns:
        Mapping from each loadable key to its HxWx3 uint8 array; unavailable keys are left out.
    """
    out = {}
    for key in keys:
        arr = _load_one(key)
        if arr is not None:
            out[key] = arr
    return out


def select_sources(num_classes: int) -> tuple[list[tuple[str, str]], list[str], dict[str, np.ndarray]]:
    """The first ``num_classes`` class sources and the background sources that load offline.

    Returns:
        ``(chosen, bg_keys, loaded)``: ``(class name, image key)`` pairs, background image keys, and the
        loaded images by key.

    Raises:
        ValueError: more classes than class images available offline.
        RuntimeError: no background image loads.
    """
    loaded = load_source_images(tuple(k for _, k in CLASS_SOURCES) + BACKGROUND_SOURCES)
    avail = [(name, key) for name, key in CLASS_SOURCES if key in loaded]
    if not 1 <= num_classes <= len(avail):
        raise ValueError(f"num_classes must be in [1, {len(avail)}] (class sources available offline: "
                         f"{[n for n, _ in avail]}), got {num_classes}")
    bg_keys = [k for k in BACKGROUND_SOURCES if k in loaded]
    if not bg_keys:
        raise RuntimeError(f"none of the background images {BACKGROUND_SOURCES} could be loaded offline")
    return avail[:num_classes], bg_keys, loaded


def prepare_source(arr: np.ndarray, key: str, size: int) -> Image.Image:
    """Crop a source to its focus box and rescale so its shorter side is ``2 * size`` pixels."""
    h, w = arr.shape[:2]
    if key in _FOCUS:
        t, l, b, r = _FOCUS[key]
        arr = arr[int(t * h):int(b * h), int(l * w):int(r * w)]
        h, w = arr.shape[:2]
    scale = 2 * size / min(h, w)
    img = Image.fromarray(arr)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)


def random_crop(rng: np.random.Generator, src: Image.Image, h: int, w: int) -> np.ndarray:
    """A random crop of ``src`` at a random scale, resized to ``h x w``; returns HxWx3 uint8."""
    f = rng.uniform(0.6, 1.5)
    ch, cw = min(src.height, max(2, round(h * f))), min(src.width, max(2, round(w * f)))
    y = int(rng.integers(0, src.height - ch + 1))
    x = int(rng.integers(0, src.width - cw + 1))
    patch = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(patch)


def background_mosaic(rng: np.random.Generator, bgs: list[Image.Image], size: int) -> np.ndarray:
    """A mosaic of 1-3 rectangular tiles, each a crop of a random background photograph."""
    img = np.empty((size, size, 3), np.uint8)
    tiles = int(rng.integers(1, 4))
    vertical = bool(rng.integers(0, 2))
    cuts = np.sort(rng.integers(size // 5, size - size // 5, tiles - 1)) if tiles > 1 else np.array([], int)
    bounds = [0, *cuts.tolist(), size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        src = bgs[int(rng.integers(0, len(bgs)))]
        if vertical:
            img[:, a:b] = random_crop(rng, src, size, b - a)
        else:
            img[a:b, :] = random_crop(rng, src, b - a, size)
    return img


def shape_mask(rng: np.random.Generator, h: int, w: int, cx: float, cy: float, rx: float, ry: float, kind: int,
               min_radius: float = 0.6, inclusive: bool = True) -> np.ndarray:
    """An ``h x w`` bool mask of a filled shape centred at ``(cx, cy)`` with radii ``(rx, ry)``: ``kind`` 0 an
    ellipse, 1 a star-convex polygon of 5-9 vertices at ``min_radius..1`` of the radii (drawn from ``rng``),
    2 a rectangle (``inclusive=False``: its right and bottom edges one pixel in). Every proxy set's shapes."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if kind == 0:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    elif kind == 1:
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(min_radius, 1.0, n)
        draw.polygon([(float(cx + rx * r * np.cos(a)), float(cy + ry * r * np.sin(a)))
                      for a, r in zip(angles, radii)], fill=1)
    else:
        e = 0 if inclusive else 1
        draw.rectangle([cx - rx, cy - ry, cx + rx - e, cy + ry - e], fill=1)
    return np.asarray(mask, dtype=bool)


def _shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random filled ellipse, star-convex polygon or rectangle as an HxW bool mask."""
    rh, rw = rng.uniform(0.12, 0.32, 2) * size
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    return shape_mask(rng, size, size, cx, cy, rw, rh, int(rng.integers(0, 3)), min_radius=0.5)


def _boundary(label: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a change of class (VOC-style ignore band)."""
    edge = np.zeros(label.shape, bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:-1, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, 1:] != label[:, :-1]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def _sample(rng: np.random.Generator, fgs: list[Image.Image], bgs: list[Image.Image], size: int,
            boundary: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image HxWx3 uint8, label HxW uint8) pair with at least two foreground classes visible."""
    k = len(fgs)
    while True:
        img = background_mosaic(rng, bgs, size)
        label = np.zeros((size, size), np.uint8)
        n = int(rng.integers(3, 7))
        first = rng.choice(k, size=min(2, k), replace=False).tolist()
        classes = first + rng.integers(0, k, n - len(first)).tolist()
        for c in classes:
            mask = _shape_mask(rng, size)
            img[mask] = random_crop(rng, fgs[c], size, size)[mask]
            label[mask] = c + 1
        if len(np.unique(label[label > 0])) >= min(2, k):
            break
    if boundary > 0:
        label[_boundary(label, boundary)] = 255
    return img, label


def _save_label(label: np.ndarray, path: Path, palette: list[int]) -> None:
    """Write ``label`` as a VOC palette ('P' mode) PNG."""
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    im.putpalette(palette)
    im.save(path, format="PNG", optimize=False)


def read_manifest(root: Path, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    """The manifest ``name`` of an earlier build of a proxy set, or ``None`` when there is none or it is
    damaged (then the set is rebuilt: the manifest is the builder's own record, not user data)."""
    try:
        manifest = json.loads((root / name).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _complete(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether every file named by the manifest's split lists exists."""
    splits = manifest.get("splits")
    for split in ("train", "val"):
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file() or not isinstance(splits, dict):
            return False
        try:
            ids = split_file.read_text().split()
        except UnicodeDecodeError:
            return False
        if len(ids) != splits.get(split):
            return False
        for i in ids:
            if not (root / "JPEGImages" / f"{i}.jpg").is_file() or \
               not (root / "SegmentationClass" / f"{i}.png").is_file():
                return False
    return True


def build_proxy_voc(root: str | Path, num_train: int = 64, num_val: int = 24, size: int = 128,
                    num_classes: int = 5, seed: int = 0, force: bool = False,
                    boundary: int = 0) -> dict[str, Any]:
    """Build (or reuse) the proxy segmentation dataset under ``root`` in PASCAL VOC layout.

    Idempotent: when ``root/densenas_proxy.json`` records the same parameters and sources and all listed
    files exist, nothing is written. Otherwise earlier proxy files are removed and everything is
    regenerated. The same seed gives byte-identical label PNGs.

    Args:
        root: output folder (created if missing).
        num_train: number of training samples.
        num_val: number of validation samples.
        size: side of the square samples in pixels.
        num_classes: number of foreground classes (class 0 is background), at most ``len(PROXY_CLASSES) - 1``.
        seed: random seed for the scene composition.
        force: regenerate even when the manifest matches.
        boundary: width in pixels of a VOC-style ignore band (255) along class changes; 0 for none.

    Returns:
        The manifest dict (also written to ``root/densenas_proxy.json``).

    Raises:
        ValueError: invalid sizes or more classes than available source images.
        RuntimeError: no background source image could be loaded.
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train >= 0, num_val >= 0 and some samples, got {num_train}, {num_val}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if boundary < 0:
        raise ValueError(f"boundary must be >= 0, got {boundary}")
    root = Path(root)
    chosen, bg_keys, loaded = select_sources(num_classes)
    params = {"num_train": num_train, "num_val": num_val, "size": size, "num_classes": num_classes,
              "seed": seed, "boundary": boundary}
    manifest: dict[str, Any] = {
        "format": "densenas_proxy_voc", "version": FORMAT_VERSION, "params": params,
        "classes": ["background"] + [n for n, _ in chosen],
        "class_sources": {n: k for n, k in chosen}, "background_sources": bg_keys,
        "splits": {"train": num_train, "val": num_val}, "ignore_index": 255, "layout": "voc",
    }
    old = read_manifest(root)
    if not force and old is not None and _complete(root, old) and all(
            old.get(k) == manifest[k] for k in ("format", "version", "params", "class_sources",
                                                "background_sources")):
        return old

    for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stale in (root / sub).glob(f"{ID_PREFIX}*.{ext}"):
            stale.unlink()
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # written last: a crash leaves no valid manifest
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)

    fgs = [prepare_source(loaded[k], k, size) for _, k in chosen]
    bgs = [prepare_source(loaded[k], k, size) for k in bg_keys]
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    counts = np.zeros(256, np.int64)
    ids = {"train": [f"{ID_PREFIX}{i:06d}" for i in range(num_train)],
           "val": [f"{ID_PREFIX}{i:06d}" for i in range(num_train, num_train + num_val)]}
    for split in ("train", "val"):
        for sid in ids[split]:
            img, label = _sample(rng, fgs, bgs, size, boundary)
            Image.fromarray(img).save(root / "JPEGImages" / f"{sid}.jpg", format="JPEG", quality=92)
            _save_label(label, root / "SegmentationClass" / f"{sid}.png", palette)
            counts += np.bincount(label.ravel(), minlength=256)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"{i}\n" for i in ids[split]))
    total = max(1, int(counts[:num_classes + 1].sum()))
    manifest["class_pixel_fraction"] = {n: round(float(counts[c]) / total, 4)
                                        for c, n in enumerate(manifest["classes"])}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
