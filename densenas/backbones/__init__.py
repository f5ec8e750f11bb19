"""Plugin backbones: pretrained encoders exposing multi-scale features with explicit shape contracts.

"Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells" (Nekrasov,
Chen, Shen, Reid; CVPR 2019) searches only the decoder on top of an ImageNet-pretrained encoder. The
encoder is a plugin chosen by ``{"type": name, **kwargs}`` from :data:`BACKBONES`:

* ``mobilenet_v2`` - torchvision MobileNetV2, the default (:mod:`.mobilenet_v2`);
* ``efficientnet_lite0`` - EfficientNet-Lite0 (:mod:`.efficientnet_lite`);
* ``timm`` - any timm model with ``features_only`` (:mod:`.timm_encoder`).

:func:`build_backbone` returns ``(encoder, {level name: ShapeSpec})``; :func:`backbone_shapes` the shapes
alone; :class:`DenseNASBackbone` wraps any entry as an OpenMMLab backbone. Pretrained weights are only
ever read from local files (:mod:`.common`); nothing is downloaded.
"""
from importlib import metadata  # noqa: F401  (tests patch densenas.backbones.metadata)

import torch  # noqa: F401  (tests patch densenas.backbones.torch.hub)

from .common import (IMAGENET_MEAN, IMAGENET_STD, InputNorm, find_weights, level_names, load_checkpoint,
                     named_shapes)
from .efficientnet_lite import (EFFICIENTNET_LITE0_DIST, EFFICIENTNET_LITE0_ENV, EFFICIENTNET_LITE0_FILE,
                                EfficientNetLite0Encoder, efficientnet_lite0_classifier,
                                efficientnet_lite0_state_dict, find_efficientnet_lite0_weights)
from .mobilenet_v2 import (MOBILENET_V2_FILE, WEIGHTS_DIST, WEIGHTS_ENV, MobileNetV2Encoder,
                           find_mobilenet_v2_weights, load_mobilenet_v2_state_dict)
from .registry import (BACKBONES, DEFAULT_BACKBONE, DenseNASBackbone, backbone_keys, backbone_shapes,
                       build_backbone)
from .timm_encoder import TimmEncoder

__all__ = [
    "BACKBONES", "DEFAULT_BACKBONE", "DenseNASBackbone", "EFFICIENTNET_LITE0_DIST", "EFFICIENTNET_LITE0_ENV",
    "EFFICIENTNET_LITE0_FILE", "EfficientNetLite0Encoder", "IMAGENET_MEAN", "IMAGENET_STD", "InputNorm",
    "MOBILENET_V2_FILE", "MobileNetV2Encoder", "TimmEncoder", "WEIGHTS_DIST", "WEIGHTS_ENV", "backbone_keys",
    "backbone_shapes", "build_backbone", "efficientnet_lite0_classifier", "efficientnet_lite0_state_dict",
    "find_efficientnet_lite0_weights", "find_mobilenet_v2_weights", "find_weights", "level_names",
    "load_checkpoint", "load_mobilenet_v2_state_dict", "named_shapes",
]
