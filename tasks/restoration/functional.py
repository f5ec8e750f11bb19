"""Image restoration task (denoising, deraining): SSIM, loss, metrics and reward.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS). The search and training loss is

    loss = ||f(x) - y||^2 + λ · log10(1 / SSIM(f(x), y)),

SSIM being Wang et al.'s structural similarity (IEEE TIP 2004) with an 11x11 Gaussian window of
σ = 1.5, computed here in torch so the loss is differentiable. Images are float tensors in ``[0, 1]``,
``(N, C, H, W)``. Metrics are PSNR and SSIM from :mod:`skimage.metrics` (``data_range=1``, Gaussian
window σ = 1.5 without the sample-covariance correction, i.e. Wang et al.'s reference settings, averaged
over channels), computed per image on predictions clipped to ``[0, 1]`` and averaged. The reward is the
mean PSNR by default.

Degradations (additive white Gaussian noise, synthetic rain) are the data layer's
(:mod:`densenas.datasets.degrade`), re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# the degradations live with the data (datasets/degrade.py); re-exported: the task's public names
from densenas.datasets.degrade import (BSD500_SIGMAS, Range, add_gaussian_noise, add_rain,  # noqa: E402,F401
                                       motion_blur_kernel, rain_streaks)


# -------------------------------------------------------------------------------------------- SSIM
def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
         reduction: str = "mean") -> Tensor:
    """Differentiable SSIM (Wang et al. 2004): Gaussian window, K1 = 0.01, K2 = 0.03.

    Statistics are computed only where the window fits inside the image ("valid" filtering), which is
    what :func:`skimage.metrics.structural_similarity` averages over, and the map is averaged over
    channels and pixels.

    Args:
        pred: ``(N, C, H, W)`` images.
        target: same shape.
        data_range: value range of the images.
        window_size: window side (odd).
        sigma: window standard deviation.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per image).

    Returns:
        SSIM as a tensor.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images {tuple(pred.shape[-2:])} are smaller than the {window_size}x"
                         f"{window_size} window")
    c = pred.shape[1]
    g = gaussian_window(window_size, sigma).to(pred)
    wy, wx = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, wy, groups=c), wx, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = filt(pred), filt(target)
    sxx = filt(pred * pred) - mu_x ** 2
    syy = filt(target * target) - mu_y ** 2
    sxy = filt(pred * target) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    per_image = smap.flatten(1).mean(1)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def restoration_loss(pred: Tensor, target: Tensor, lam: float = 0.1, eps: float = 1e-4) -> Tensor:
    """IR-NAS loss: ``MSE + lam * log10(1 / SSIM)``.

    Args:
        pred: restored images ``(N, C, H, W)``.
        target: clean images.
        lam: weight λ of the log-SSIM term (the paper leaves it open; a config knob).
        eps: SSIM is clamped to at least ``eps`` before the log (early, SSIM can be <= 0).

    Returns:
        Scalar loss.
    """
    mse = F.mse_loss(pred, target)
    if lam == 0:
        return mse
    return mse + lam * torch.log10(1.0 / ssim(pred, target).clamp(min=eps))


# ----------------------------------------------------------------------------------------- metrics
def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB computed in torch (fast, for logging); ``(N,)``."""
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def psnr_ssim(pred: Tensor, target: Tensor, max_psnr: float = 100.0) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over a batch, per image with :mod:`skimage.metrics`.

    Args:
        pred: restored images ``(N, C, H, W)`` or ``(C, H, W)``; clipped to ``[0, 1]`` first.
        target: clean images, same shape.
        max_psnr: cap of a single image's PSNR (an exact reconstruction would be infinite).

    Returns:
        ``{"psnr": ..., "ssim": ...}``.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.detach().clamp(0, 1).double().cpu().numpy()
    t = target.detach().double().cpu().numpy()
    if p.ndim == 3:
        p, t = p[None], t[None]
    psnrs, ssims = [], []
    for a, b in zip(p, t):
        mse = float(np.mean((a - b) ** 2))
        psnrs.append(max_psnr if mse == 0 else min(max_psnr, float(peak_signal_noise_ratio(b, a, data_range=1.0))))
        gray = a.shape[0] == 1
        ssims.append(float(structural_similarity(
            b[0] if gray else b.transpose(1, 2, 0), a[0] if gray else a.transpose(1, 2, 0), data_range=1.0,
            channel_axis=None if gray else -1, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False)))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def restoration_reward(metrics: dict[str, float], key: str = "psnr") -> float:
    """The search reward: one metric of :func:`psnr_ssim` (PSNR by default)."""
    if key not in metrics:
        raise KeyError(f"reward metric {key!r} not in {sorted(metrics)}")
    return float(metrics[key])


@torch.no_grad()
def evaluate_restoration(model: Callable[[Tensor], Tensor], degraded: Tensor, clean: Tensor,
                         batch_size: int = 8) -> dict[str, float]:
    """PSNR/SSIM of ``model`` on in-memory pairs (eval mode, batched, averaged per image)."""
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        preds = torch.cat([model(degraded[i:i + batch_size]) for i in range(0, len(degraded), batch_size)])
    finally:
        if hasattr(model, "train"):
            model.train(was)
    return psnr_ssim(preds, clean)


def restoration_score_fn(reward_metric: str = "psnr", batch_size: int = 8
                         ) -> Callable[[Callable[[Tensor], Tensor], tuple[Tensor, Tensor]], tuple[float, dict]]:
    """A score function ``(model, (degraded, clean)) -> (reward, {"psnr", "ssim"})`` for supernet searches
    (the ``score_fn`` of :class:`densenas.evaluation.supernet.SupernetTrainer`)."""
    def score(model: Callable[[Tensor], Tensor], split: tuple[Tensor, Tensor]) -> tuple[float, dict]:
        metrics = evaluate_restoration(model, split[0], split[1], batch_size)
        return restoration_reward(metrics, reward_metric), metrics

    return score


@dataclass
class RestorationSpec:
    """One restoration task: how inputs are degraded, the loss, the metrics and the reward.

    Args:
        kind: ``"denoise"`` (Gaussian noise of ``sigma``) or ``"derain"`` (synthetic streaks, or real
            pairs from a dataset, in which case :meth:`degrade` is not used).
        sigma: noise level on the 0..255 scale (denoising).
        lam: weight of the log-SSIM term of the loss.
        reward_metric: ``"psnr"`` or ``"ssim"``.
    """

    kind: str = "denoise"
    sigma: float = 30.0
    lam: float = 0.1
    reward_metric: str = "psnr"

    def __post_init__(self) -> None:
        if self.kind not in ("denoise", "derain"):
            raise ValueError(f"kind must be 'denoise' or 'derain', got {self.kind!r}")
        if self.reward_metric not in ("psnr", "ssim"):
            raise ValueError(f"reward_metric must be 'psnr' or 'ssim', got {self.reward_metric!r}")

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        """The degraded version of ``clean`` (deterministic given ``seed``)."""
        if self.kind == "denoise":
            return add_gaussian_noise(clean, self.sigma, torch.Generator().manual_seed(seed))
        return add_rain(clean, seed)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return restoration_loss(pred, target, self.lam)

    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, float]:
        return psnr_ssim(pred, target)

    def reward(self, metrics: dict[str, float]) -> float:
        return restoration_reward(metrics, self.reward_metric)
