"""Reader and writer of the NYU Depth V2 layout as mmsegmentation 1.x reads it (``NYUDataset``).

NYU Depth V2 (Silberman et al., ECCV 2012) cannot be downloaded here; this module reads and writes its
on-disk layout exactly as mmseg's ``NYUDataset`` + ``LoadDepthAnnotation(depth_rescale_factor=1e-3)`` and
its ``configs/_base_/datasets/nyu.py`` expect it::

    root/images/<split>/<name>.jpg          RGB image (any subfolders; ``<name>`` must contain a digit:
                                            mmseg derives a scene category from the text before it)
    root/annotations/<split>/<name>.png     16-bit single-channel PNG, depth in millimetres, 0 = invalid

with ``<split>`` ``train`` and ``test``. :class:`NYUDepthFolder` indexes one split, checks every pair and
loads it into memory at the proxy size (:meth:`NYUDepthFolder.load_arrays`: ImageNet-normalised images
like the segmentation reader, depth in metres, 0 where invalid). Every problem names the file and the
field: a missing root / split / partner file, a depth PNG that is not 16-bit single-channel, a depth map
whose size differs from its image. :func:`write_nyu_pair` writes one pair (used by the proxy builder,
:mod:`densenas.datasets.depth_proxy`, and by :func:`write_motorcycle_fixture`, one real depth sample).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .segfolder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["NYUDepthFolder", "write_nyu_pair", "write_motorcycle_fixture", "MOTORCYCLE_CALIB", "depth_to_png"]

_LAYOUT = "root/images/<split>/<name>.jpg and root/annotations/<split>/<name>.png (uint16 depth in mm)"

#: Middlebury 2014 "Motorcycle" calibration for skimage's 4x down-sampled pair (its docstring): focal length
#: and principal-point offset between the two cameras in pixels, baseline in millimetres.
MOTORCYCLE_CALIB = {"focal_px": 994.978, "doffs_px": 31.086, "baseline_mm": 193.001}


def depth_to_png(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> the uint16 millimetre map NYU stores (non-finite, non-positive or too far -> 0)."""
    d = np.asarray(depth_m, np.float64)
    mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0.0)
    return np.where(mm <= 65535, mm, 0).astype(np.uint16)


def write_nyu_pair(root: str | Path, split: str, name: str, image: np.ndarray, depth_m: np.ndarray,
                   quality: int = 92) -> tuple[Path, Path]:
    """Write ``image`` (HxWx3 uint8) and ``depth_m`` (HxW metres; 0 / NaN / inf = invalid) in the NYU layout.

    Returns:
        The image and depth PNG paths.

    Raises:
        ValueError: wrong shapes or a ``name`` without a digit (mmseg's ``NYUDataset`` needs one).
    """
    import cv2

    image, depth_m = np.asarray(image), np.asarray(depth_m)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if depth_m.shape != image.shape[:2]:
        raise ValueError(f"{name}: depth {depth_m.shape} and image {image.shape[:2]} differ in size")
    if not any(c.isdigit() for c in name):
        raise ValueError(f"{name!r}: NYU file names need a digit (mmseg's NYUDataset reads the scene "
                         f"category as the text before the first digit)")
    img_path = Path(root) / "images" / split / f"{name}.jpg"
    dep_path = Path(root) / "annotations" / split / f"{name}.png"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    dep_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(img_path, format="JPEG", quality=quality)
    # cv2 writes a true 16-bit grey PNG, the format mmseg's LoadDepthAnnotation (cv2 backend) decodes
    if not cv2.imwrite(str(dep_path), depth_to_png(depth_m)):
        raise OSError(f"{dep_path}: could not write the depth PNG")
    return img_path, dep_path


def motorcycle_depth() -> tuple[np.ndarray, np.ndarray]:
    """``skimage.data.stereo_motorcycle()``'s left image and its depth in metres (0 where the disparity
    is unknown), by ``Z = focal * baseline / (disparity + doffs)`` with the Middlebury calibration."""
    import skimage.data

    left, _, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, np.float64)
    c = MOTORCYCLE_CALIB
    valid = np.isfinite(disp) & (disp + c["doffs_px"] > 0)
    depth = np.zeros(disp.shape, np.float64)
    depth[valid] = c["focal_px"] * c["baseline_mm"] / (disp[valid] + c["doffs_px"]) / 1000.0
    return np.ascontiguousarray(left[:, :, :3]), depth


def write_motorcycle_fixture(root: str | Path, splits: tuple[str, ...] = ("train", "test"),
                             size: tuple[int, int] | None = (120, 160)) -> Path:
    """One real depth sample (Middlebury "Motorcycle", via skimage) written in the NYU layout to each split.

    Args:
        root: output folder.
        splits: the splits that get the sample (``motorcycle_0001``).
        size: ``(height, width)`` to downsample to (nearest for depth: no value is mixed with an invalid
            one); ``None`` keeps 500x741.

    Returns:
        ``root``.
    """
    image, depth = motorcycle_depth()
    if size is not None:
        h, w = size
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
        ys = (np.arange(h) * depth.shape[0] / h).astype(int)
        xs = (np.arange(w) * depth.shape[1] / w).astype(int)
        depth = depth[ys][:, xs]
    for split in splits:
        write_nyu_pair(root, split, "motorcycle_0001", image, depth)
    return Path(root)


class NYUDepthFolder:
    """One split of a dataset in the NYU layout (see the module docstring).

    Args:
        root: dataset root (holds ``images/`` and ``annotations/``).
        split: ``"train"`` or ``"test"`` (any folder name under ``images/``).

    Raises:
        FileNotFoundError: a missing root or split folder, no images, or an image / depth PNG without its
            partner (both paths named).
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.root, self.split = Path(root), str(split)
        img_dir, dep_dir = self.root / "images" / self.split, self.root / "annotations" / self.split
        if not self.root.is_dir():
            raise FileNotFoundError(f"NYU root {self.root} does not exist (expected {_LAYOUT})")
        for d in (img_dir, dep_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: split folder missing (expected {_LAYOUT})")
        images = sorted(p.relative_to(img_dir) for p in img_dir.rglob("*.jpg"))
        depths = {p.relative_to(dep_dir).with_suffix("") for p in dep_dir.rglob("*.png")}
        if not images:
            raise FileNotFoundError(f"{img_dir}: no .jpg images (expected {_LAYOUT})")
        missing = [p for p in images if p.with_suffix("") not in depths]
        if missing:
            raise FileNotFoundError(f"{img_dir / missing[0]}: no depth map {dep_dir / missing[0].with_suffix('.png')}"
                                    f" ({len(missing)} image(s) without a pair)")
        orphans = sorted(depths - {p.with_suffix("") for p in images})
        if orphans:
            raise FileNotFoundError(f"{dep_dir / orphans[0]}.png: no image {img_dir / orphans[0]}.jpg "
                                    f"({len(orphans)} depth map(s) without a pair)")
        self.images = [img_dir / p for p in images]
        self.depths = [dep_dir / p.with_suffix(".png") for p in images]

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"NYUDepthFolder(root={str(self.root)!r}, split={self.split!r}, {len(self)} pairs)"

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` as HxWx3 uint8 (a damaged file is a ``ValueError`` naming it)."""
        path = self.images[index]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            raise ValueError(f"{path}: unreadable image ({e})") from None

    def read_depth(self, index: int) -> np.ndarray:
        """Depth ``index`` in metres (float32 HxW, 0 = invalid).

        Raises:
            ValueError: unreadable, not a 16-bit single-channel PNG, or not the size of its image (the file
                and the field are named).
        """
        import cv2

        path = self.depths[index]
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ValueError(f"{path}: unreadable depth PNG")
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        if arr.dtype != np.uint16 or channels != 1:
            raise ValueError(f"{path}: depth PNG must be 16-bit single-channel (uint16 millimetres), got "
                             f"dtype {arr.dtype} with {channels} channel(s)")
        with Image.open(self.images[index]) as im:
            w, h = im.size
        if arr.shape != (h, w):
            raise ValueError(f"{path}: depth size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from its image "
                             f"{self.images[index]} ({w}x{h})")
        return arr.astype(np.float32) / 1000.0

    def load_arrays(self, size: int | tuple[int, int], max_items: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The split in memory at ``size`` (an int: square; or ``(height, width)``).

        Returns:
            ``(images N x 3 x H x W`` ImageNet-normalised float32, ``depth N x 1 x H x W`` metres float32 with
            0 where invalid``)``. Depth is resized by nearest neighbour so no value mixes with an invalid one.
        """
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        n = len(self) if max_items is None else min(len(self), int(max_items))
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        xs, ds = [], []
        for i in range(n):
            depth = torch.from_numpy(self.read_depth(i))[None, None]
            img = torch.from_numpy(self.read_image(i).copy()).permute(2, 0, 1).float()[None] / 255.0
            if tuple(img.shape[-2:]) != (h, w):
                img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
                depth = F.interpolate(depth, size=(h, w), mode="nearest")
            xs.append((img[0] - mean) / std)
            ds.append(depth[0])
        return torch.stack(xs), torch.stack(ds)
