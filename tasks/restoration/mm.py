"""Thin mmengine adapters for image restoration: model, dataset and metric of the IR-NAS retraining.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS): the derived IR-NAS network and the DnCNN baseline (Zhang et al., IEEE TIP
2017) are retrained by the ordinary mmengine ``Runner`` (``tools/train.py``) under one schedule and
evaluated with PSNR/SSIM. Registers, on import, in mmengine's root registries (so configs need no
``default_scope``):

* ``MODELS``: ``DenseNASRestorer`` (a ``BaseModel`` around a found restorer network (as its space builds it) or
  :class:`~densenas.decoders.dncnn.DnCNN`, trained with :func:`~densenas.tasks.restoration.functional.restoration_loss`)
  and ``DenseNASRestorationPreprocessor`` (stacks images and moves them to the model's device);
* ``DATASETS``: ``DenseNASRestorationDataset`` (BSD500 clean images degraded on the fly, or Rain100 pairs;
  test degradations are fixed per image so every evaluation sees the same inputs);
* ``METRICS``: ``DenseNASRestorationMetric`` (mean per-image PSNR and SSIM, keys ``psnr`` / ``ssim``).

Use from a config with ``custom_imports=dict(imports=["densenas.tasks.restoration.mm"])``;
:func:`densenas.tasks.restoration.export.restoration_config` writes such configs.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from torch import Tensor, nn
from torch.utils.data import Dataset

from densenas.arch import Arch, InvalidArch, as_arch
from densenas.datasets.imagefolder import CleanImageFolder, RainPairFolder
from densenas.decoders.dncnn import DnCNN
from densenas.plugins import SPACES, available
from densenas.space import space_from_section
from densenas.tasks.restoration.functional import (add_gaussian_noise, add_rain, psnr, psnr_ssim, restoration_loss)

#: the output kinds whose found networks this task trains (``RestorationTask.accepts``)
RESTORER_KINDS = ("restorer",)
DNCNN_KEYS = ("width", "depth", "in_channels")  # the settings of the DnCNN baseline's net entry
LAYOUTS = ("bsd", "rain100")
TASKS = ("denoise", "derain")


# ------------------------------------------------------------------------------------------ networks
def build_restoration_net(net: Mapping[str, Any]) -> nn.Module:
    """Build a restoration network from its config dict.

    Args:
        net: ``dict(type="dncnn", width=64, depth=17, in_channels=3)`` (the baseline), or the fragment a
            ``restorer`` space wrote (``SearchSpace.mm_fragment(arch, "restorer_net")``): ``dict(type=<space>,
            arch=<Arch | dict | path>, **settings)``, e.g. IR-NAS's ``width``, ``layers``, ``blocks``,
            ``in_channels``, ``aspp``, ``ops``; the space is rebuilt from it through the space plugins
            (:func:`~densenas.space.space_from_section`), never by its name here.

    Returns:
        A module ``degraded (N, C, H, W) -> restored (N, C, H, W)``.

    Raises:
        ValueError: unknown ``type`` or unknown keys.
        InvalidArch: invalid arch (the message names the field).
    """
    cfg = dict(net)
    kind = cfg.pop("type", None)
    if kind == "dncnn":
        extra = sorted(set(cfg) - set(DNCNN_KEYS))
        if extra:
            raise ValueError(f"net type 'dncnn' got unknown keys {extra}; allowed: {sorted(DNCNN_KEYS)}")
        return DnCNN(int(cfg.get("in_channels", 3)), int(cfg.get("width", 64)), int(cfg.get("depth", 17)))
    if not isinstance(kind, str) or kind not in available(SPACES):
        raise ValueError(f"net type {kind!r} is unknown; use 'dncnn' or a search space of output kind "
                         f"'restorer' ({', '.join(n for n in available(SPACES))} are installed)")
    if "arch" not in cfg:
        raise ValueError(f"net type {kind!r} needs arch=<Arch.to_dict() or path>")
    arch = as_arch(cfg.pop("arch"))
    try:
        space = space_from_section({"type": kind, **cfg}, arch, accepts=RESTORER_KINDS, task="restoration")
    except TypeError as e:  # a setting the space's constructor does not take
        raise ValueError(f"net type {kind!r}: {e}") from None
    return space.build(arch)


# ------------------------------------------------------------------------------------------- model
def _stack(x: Tensor | Sequence[Tensor], what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    shapes = {tuple(t.shape) for t in x}
    if len(shapes) != 1:
        raise ValueError(f"{what}: images of different sizes {sorted(shapes)} in one batch; use batch_size=1 "
                         f"or a crop for this dataloader")
    return torch.stack(list(x))


@MODELS.register_module()
class DenseNASRestorationPreprocessor(BaseDataPreprocessor):
    """Turns a collated batch ``dict(inputs, gt)`` into ``dict(inputs=(N,C,H,W), data_samples=gt)``.

    Images are already float ``[0, 1]`` tensors (the dataset makes them); lists (``pseudo_collate``) are
    stacked and everything is moved to the model's device.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        gt = data.get("gt")
        return dict(inputs=_stack(data["inputs"], "inputs"),
                    data_samples=None if gt is None else _stack(gt, "gt"))


@MODELS.register_module()
class DenseNASRestorer(BaseModel):
    """mmengine model wrapping a restoration network (IR-NAS or DnCNN).

    Args:
        net: network config, see :func:`build_restoration_net`.
        loss: ``dict(lam=0.1)``, the weight of the ``log10(1 / SSIM)`` term.
        data_preprocessor: default ``DenseNASRestorationPreprocessor``.
        init_cfg: mmengine init config (``None`` keeps the networks' own initialisation).
    """

    def __init__(self, net: Mapping[str, Any], loss: Mapping[str, Any] | None = None,
                 data_preprocessor: dict | nn.Module | None = None, init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="DenseNASRestorationPreprocessor"),
                         init_cfg=init_cfg)
        loss = dict(loss or {})
        extra = sorted(set(loss) - {"lam"})
        if extra:
            raise ValueError(f"loss got unknown keys {extra}; allowed: ['lam']")
        self.lam = float(loss.get("lam", 0.1))
        self.net_cfg = dict(net)
        self.net = build_restoration_net(net)

    def forward(self, inputs: Tensor, data_samples: Tensor | None = None, mode: str = "tensor"
                ) -> dict[str, Tensor] | list[dict[str, Tensor]] | Tensor:
        """Run in one of mmengine's modes.

        Args:
            inputs: degraded images ``(N, C, H, W)`` in ``[0, 1]``.
            data_samples: clean images, same shape (needed for ``loss``; optional for ``predict``).
            mode: ``"loss"`` -> ``{"loss", "mse", "psnr"}`` (only ``loss`` is optimised);
                ``"predict"`` -> one ``dict(pred=..., gt=...)`` per image; ``"tensor"`` -> restored images.
        """
        restored = self.net(inputs)
        if mode == "tensor":
            return restored
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs the clean images as data_samples")
            with torch.no_grad():
                mse = F.mse_loss(restored, data_samples)
                batch_psnr = psnr(restored.clamp(0, 1), data_samples).mean()
            return {"loss": restoration_loss(restored, data_samples, self.lam), "mse": mse, "psnr": batch_psnr}
        if mode == "predict":
            gts = [None] * len(restored) if data_samples is None else list(data_samples)
            return [dict(pred=p, gt=g) if g is not None else dict(pred=p) for p, g in zip(restored, gts)]
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


# ------------------------------------------------------------------------------------------ dataset
def _at_least(img: Tensor, size: int) -> Tensor:
    """Upscale ``img`` (C, H, W) bicubically so both sides are ``>= size`` (keeps the aspect ratio)."""
    h, w = img.shape[-2:]
    if h >= size and w >= size:
        return img
    s = max(size / h, size / w)
    out = F.interpolate(img[None], size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                        align_corners=False)[0]
    return out.clamp(0.0, 1.0)


@DATASETS.register_module()
class DenseNASRestorationDataset(Dataset):
    """Restoration samples ``dict(inputs=degraded, gt=clean, img_path=...)`` as float ``[0, 1]`` tensors.

    Training (``test_mode=False``): a random ``crop`` (images smaller than it are upscaled first), random
    horizontal/vertical flips and, for square crops, transposition; fresh noise / rain every time.
    Test: a center ``crop`` (or the whole image with ``crop=None``) and a degradation drawn from a seed
    fixed per image (CRC32 of ``seed`` and the file name), so every evaluation sees the same inputs.

    Args:
        data_root: dataset root.
        split: split folder (``train``/``val``/``test``; Rain100 may use ``None`` for the root itself).
        layout: ``"bsd"`` (clean images, ``root/images/<split>``) or ``"rain100"`` (rain/clean pairs).
        task: ``"denoise"`` (Gaussian noise of ``sigma``) or ``"derain"`` (synthetic streaks on ``bsd``,
            the real pairs on ``rain100``).
        sigma: noise standard deviation on the 0..255 scale (denoising).
        crop: crop side; ``None`` keeps whole images (test only).
        test_mode: deterministic test behaviour; default ``split != "train"``.
        channels: 3 (RGB) or 1 (grayscale).
        seed: base seed of the fixed test degradations.

    Raises:
        FileNotFoundError: missing root / split folder (raised by the folder readers, naming the path).
        ValueError: bad layout, task, sigma or crop.
    """

    def __init__(self, data_root: str | Path, split: str | None = "train", layout: str = "bsd",
                 task: str = "denoise", sigma: float = 25.0, crop: int | None = 64,
                 test_mode: bool | None = None, channels: int = 3, seed: int = 0):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if layout == "rain100" and task != "derain":
            raise ValueError("layout='rain100' holds rain/clean pairs: use task='derain'")
        if not 0 <= float(sigma) <= 255:
            raise ValueError(f"sigma must be in 0..255 (the 0..255 scale), got {sigma}")
        self.test_mode = split != "train" if test_mode is None else bool(test_mode)
        if crop is None and not self.test_mode:
            raise ValueError("training needs a crop size (crop=None keeps whole images, test only)")
        if crop is not None and int(crop) < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        self.data_root, self.split, self.layout, self.task = Path(data_root), split, layout, task
        self.sigma, self.crop, self.seed = float(sigma), None if crop is None else int(crop), int(seed)
        if layout == "bsd":
            self.folder: Dataset = CleanImageFolder(self.data_root, split or "train", channels)
            self.files = list(self.folder.files)
        else:
            self.folder = RainPairFolder(self.data_root, split, channels)
            self.files = list(self.folder.rain)

    @property
    def metainfo(self) -> dict[str, Any]:
        return dict(task=self.task, sigma=self.sigma, layout=self.layout, split=self.split)

    def __len__(self) -> int:
        return len(self.files)

    def image_seed(self, index: int) -> int:
        """The fixed seed of test image ``index`` (stable across processes and file orderings)."""
        return zlib.crc32(f"{self.seed}:{Path(self.files[index]).name}".encode())

    def _crop(self, imgs: list[Tensor]) -> list[Tensor]:
        if self.crop is None:
            return imgs
        imgs = [_at_least(x, self.crop) for x in imgs]
        h, w = imgs[0].shape[-2:]
        c = self.crop
        if self.test_mode:
            y, x = (h - c) // 2, (w - c) // 2
        else:
            y, x = int(torch.randint(0, h - c + 1, ())), int(torch.randint(0, w - c + 1, ()))
        imgs = [t[:, y:y + c, x:x + c] for t in imgs]
        if not self.test_mode:
            flips = torch.rand(3) < 0.5
            if flips[0]:
                imgs = [t.flip(-1) for t in imgs]
            if flips[1]:
                imgs = [t.flip(-2) for t in imgs]
            if flips[2]:
                imgs = [t.transpose(-1, -2) for t in imgs]
        return [t.contiguous() for t in imgs]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.layout == "rain100":
            rainy, clean = self._crop(list(self.folder[index]))
            return dict(inputs=rainy, gt=clean, img_path=str(self.files[index]))
        clean = self._crop([self.folder[index]])[0]
        if self.task == "denoise":
            gen = torch.Generator().manual_seed(self.image_seed(index)) if self.test_mode else None
            degraded = add_gaussian_noise(clean, self.sigma, gen)
        else:
            rng = self.image_seed(index) if self.test_mode else \
                np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, ())))
            degraded = add_rain(clean, rng)
        return dict(inputs=degraded, gt=clean, img_path=str(self.files[index]))

    def __repr__(self) -> str:
        return (f"DenseNASRestorationDataset(root={str(self.data_root)!r}, split={self.split!r}, "
                f"layout={self.layout!r}, task={self.task!r}, sigma={self.sigma}, crop={self.crop}, "
                f"test_mode={self.test_mode}, num_items={len(self)})")


# ------------------------------------------------------------------------------------------- metric
@METRICS.register_module()
class DenseNASRestorationMetric(BaseMetric):
    """Mean per-image PSNR (dB) and SSIM (scikit-image, :func:`~densenas.tasks.restoration.functional.psnr_ssim`).

    Predictions are clipped to ``[0, 1]``; keys are ``psnr`` and ``ssim`` (no prefix unless given, so
    ``CheckpointHook(save_best="psnr")`` finds them).

    Args:
        collect_device: ``"cpu"`` or ``"gpu"`` (distributed collection).
        prefix: optional key prefix.
    """

    def __init__(self, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device, prefix or "restoration")  # a prefix silences BaseMetric's warning
        self.prefix = prefix

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Tensor]]) -> None:
        for i, sample in enumerate(data_samples):
            if "gt" not in sample or sample["gt"] is None:
                raise ValueError(f"DenseNASRestorationMetric: sample {i} has no 'gt' (clean image)")
            m = psnr_ssim(sample["pred"][None], sample["gt"][None])
            self.results.append((m["psnr"], m["ssim"]))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            raise ValueError("DenseNASRestorationMetric: no images were evaluated")
        arr = np.asarray(results, dtype=np.float64)
        return {"psnr": float(arr[:, 0].mean()), "ssim": float(arr[:, 1].mean())}
