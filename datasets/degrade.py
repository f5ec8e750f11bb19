"""Image degradations that make restoration data: additive white Gaussian noise and synthetic rain.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS): white Gaussian noise with σ on the 0..255 scale (the BSD500 protocol uses
σ = 30, 50, 70; the noisy image is not clipped), and synthetic rain: a sparse random layer of drops
motion-blurred along a line at a random angle near vertical, added to the image and clipped.

Here, in the data layer, because both the datasets (which write degraded copies of clean photographs) and
the restoration task (which degrades on the fly) use them; data never imports a task.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

BSD500_SIGMAS: tuple[int, ...] = (30, 50, 70)
"""Noise levels (0..255 scale) of the IR-NAS BSD500 denoising benchmark."""

Range = float | tuple[float, float]


# ----------------------------------------------------------------------------------------- degradations
def add_gaussian_noise(clean: Tensor, sigma: float, generator: torch.Generator | None = None,
                       clip: bool = False) -> Tensor:
    """Add white Gaussian noise of standard deviation ``sigma / 255``.

    Args:
        clean: images in ``[0, 1]``, any shape.
        sigma: noise standard deviation on the 0..255 scale (e.g. 30, 50, 70).
        generator: torch random generator (for reproducible noise); default the global one.
        clip: clip the result to ``[0, 1]`` (the BSD500 protocol does not).

    Returns:
        The noisy images, same shape and dtype.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (0..255 scale), got {sigma}")
    device = clean.device if generator is None else generator.device
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=device).to(clean.device)
    noisy = clean + noise * (float(sigma) / 255.0)
    return noisy.clamp(0.0, 1.0) if clip else noisy


def _draw(rng: np.random.Generator, value: Range) -> float:
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


def motion_blur_kernel(length: int, angle: float, thickness: int = 1) -> np.ndarray:
    """A normalised line kernel: ``length`` pixels long, ``angle`` degrees from vertical.

    Args:
        length: line length in pixels (>= 1); the kernel is ``length x length`` (made odd).
        angle: degrees from vertical, positive leaning right at the bottom.
        thickness: line width in pixels.

    Returns:
        float32 array summing to 1.
    """
    size = int(length) | 1
    img = Image.new("F", (size, size), 0.0)
    c, r, t = (size - 1) / 2.0, (int(length) - 1) / 2.0, math.radians(angle)
    dx, dy = r * math.sin(t), r * math.cos(t)
    ImageDraw.Draw(img).line([(c - dx, c - dy), (c + dx, c + dy)], fill=1.0, width=int(thickness))
    k = np.asarray(img, dtype=np.float32)
    if k.sum() <= 0:
        k[size // 2, size // 2] = 1.0
    return k / k.sum()


def rain_streaks(height: int, width: int, rng: np.random.Generator, density: Range = (0.005, 0.02),
                 length: Range = (10, 25), angle: Range = (-20, 20), intensity: Range = (0.5, 0.9)
                 ) -> np.ndarray:
    """One synthetic rain-streak layer (HxW float32 in ``[0, 1]``).

    Drops are a Bernoulli(``density``) field of random brightness, blurred with a line kernel of the
    given length and angle and rescaled so the brightest streak reaches ``intensity``. Each argument may
    be a number or a ``(low, high)`` range to draw from.

    Args:
        height: layer height.
        width: layer width.
        rng: numpy random generator (the layer is a deterministic function of its state).
        density: fraction of pixels that seed a drop.
        length: streak length in pixels.
        angle: streak angle in degrees from vertical.
        intensity: peak streak brightness.

    Returns:
        The streak layer.
    """
    d, n, a, s = _draw(rng, density), max(1, round(_draw(rng, length))), _draw(rng, angle), _draw(rng, intensity)
    drops = (rng.random((height, width)) < d) * rng.uniform(0.3, 1.0, (height, width))
    kernel = torch.from_numpy(motion_blur_kernel(n, a))
    pad = kernel.shape[-1] // 2
    x = torch.from_numpy(drops.astype(np.float32))[None, None]
    mode = "reflect" if pad < min(height, width) else "constant"
    layer = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), kernel[None, None])[0, 0].numpy()
    peak = float(layer.max())
    return (layer * (s / peak) if peak > 0 else layer).astype(np.float32)


def add_rain(clean: Tensor, seed: int | np.random.Generator = 0, **streak_kwargs) -> Tensor:
    """Add synthetic rain to a batch: one streak layer per image, the same on every channel, clipped.

    Args:
        clean: images ``(N, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]``.
        seed: seed (or numpy generator) making the rain deterministic.
        **streak_kwargs: forwarded to :func:`rain_streaks` (``density``, ``length``, ``angle``,
            ``intensity``).

    Returns:
        The rainy images, same shape.
    """
    single = clean.dim() == 3
    x = clean[None] if single else clean
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) or (C, H, W) images, got shape {tuple(clean.shape)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    layers = np.stack([rain_streaks(x.shape[-2], x.shape[-1], rng, **streak_kwargs) for _ in range(len(x))])
    rainy = (x + torch.from_numpy(layers).to(x)[:, None]).clamp(0.0, 1.0)
    return rainy[0] if single else rainy
