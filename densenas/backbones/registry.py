"""The backbone registry: a literal table from name to encoder class, and the builders that use it.

Encoders under the decoders searched as in "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (Nekrasov et al., CVPR 2019) are chosen by a config dict
``{"type": name, **kwargs}``. :func:`build_backbone` returns the encoder and a ``dict[str, ShapeSpec]``;
:func:`backbone_shapes` returns the shapes alone without loading weights, so exporters and spaces compute
``in_channels`` for any backbone instead of hard-coding them.

Every encoder's ``forward(x)`` takes ImageNet-normalised images and returns a list of feature maps,
finest first; it also has ``out_indices`` and ``feature_shapes() -> list[ShapeSpec]`` in the same order.
Level names are ``c2``..``c5`` for strides 4..32 (:func:`~densenas.backbones.common.level_names`).

:class:`DenseNASBackbone` wraps any entry as an OpenMMLab (mmengine ``BaseModule``) backbone whose
``forward`` returns a tuple. It is deliberately not registered in any mmengine registry here: each task
registers it once, in its own OpenMMLab module.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Mapping, Sequence

import torch
from mmengine.model import BaseModule
from torch import nn

from ..space import ShapeSpec
from .common import named_shapes
from .efficientnet_lite import EfficientNetLite0Encoder
from .mobilenet_v2 import MobileNetV2Encoder
from .timm_encoder import TimmEncoder

#: name -> encoder class; the keyword arguments of each class are the config keys of its entry.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": MobileNetV2Encoder,
    "efficientnet_lite0": EfficientNetLite0Encoder,
    "timm": TimmEncoder,
}

DEFAULT_BACKBONE = "mobilenet_v2"

_SHAPES_CACHE: dict[str, dict[str, ShapeSpec]] = {}


def _suggest(value: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def backbone_keys(name: str) -> set[str]:
    """Config keys (besides ``type``) that backbone ``name`` accepts."""
    sig = inspect.signature(BACKBONES[name])
    return {n for n, p in sig.parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _split(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a backbone config and return ``(type, kwargs)``.

    Raises:
        ValueError: missing/unknown ``backbone.type`` or an unknown ``backbone.<key>``.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"backbone must be a dict with a 'type' key, got {type(cfg).__name__}")
    kwargs = dict(cfg)
    name = kwargs.pop("type", None)
    if name not in BACKBONES:
        what = (" is missing" if name is None
                else f"={name!r} is unknown{_suggest(str(name), list(BACKBONES))}")
        raise ValueError(f"backbone.type{what}; registered backbones: {sorted(BACKBONES)}")
    allowed = backbone_keys(name)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"unknown key 'backbone.{key}' for backbone.type={name!r}"
                             f"{_suggest(key, sorted(allowed))}; allowed: {sorted(allowed | {'type'})}")
    params = inspect.signature(BACKBONES[name]).parameters
    for key in sorted(allowed - set(kwargs)):
        if params[key].default is inspect.Parameter.empty:
            raise ValueError(f"backbone.{key} is required for backbone.type={name!r}")
    return name, kwargs


def build_backbone(cfg: Mapping[str, Any]) -> tuple[nn.Module, dict[str, ShapeSpec]]:
    """Build a registered encoder from ``{"type": name, **kwargs}``.

    Args:
        cfg: ``type`` is a key of :data:`BACKBONES`; the other keys are that encoder's arguments.

    Returns:
        ``(encoder, shapes)``: ``encoder(x)`` returns a list of feature maps finest first, and ``shapes``
        maps level names to their :class:`ShapeSpec`, in the same order.

    Raises:
        ValueError: unknown ``backbone.type`` or ``backbone.<key>`` (naming it and the valid options).

    Example:
        >>> enc, shapes = build_backbone({"type": "mobilenet_v2", "pretrained": False})
        >>> {k: (s.channels, s.stride) for k, s in shapes.items()}
        {'c2': (24, 4), 'c3': (32, 8), 'c4': (96, 16), 'c5': (320, 32)}
    """
    name, kwargs = _split(cfg)
    encoder = BACKBONES[name](**kwargs)
    return encoder, named_shapes(encoder.feature_shapes())


def backbone_shapes(cfg: Mapping[str, Any] | None = None) -> dict[str, ShapeSpec]:
    """Shapes of a backbone's outputs without loading any weights (``pretrained=False``).

    Args:
        cfg: a backbone config as for :func:`build_backbone`; ``None`` is the default MobileNetV2.

    Returns:
        ``{level name: ShapeSpec}`` in forward order (cached per config).
    """
    name, kwargs = _split(cfg if cfg is not None else {"type": DEFAULT_BACKBONE})
    kwargs.pop("checkpoint", None)
    if "pretrained" in backbone_keys(name):
        kwargs["pretrained"] = False
    key = repr((name, sorted(kwargs.items())))
    if key not in _SHAPES_CACHE:
        _SHAPES_CACHE[key] = build_backbone({"type": name, **kwargs})[1]
    return dict(_SHAPES_CACHE[key])


class DenseNASBackbone(BaseModule):
    """Any registered densenas encoder as an OpenMMLab backbone.

    Args:
        backbone: the registry config, e.g. ``dict(type="efficientnet_lite0", out_indices=(2, 3, 4))``.
        init_cfg: mmengine initialisation config (``None`` keeps the encoder's pretrained weights).
        norm_eval: keep the encoder's BatchNorm layers in eval mode while training (their ImageNet running
            statistics frozen; their affine weights still learn), as ``norm_eval`` of mmseg's / mmdet's
            backbones. The proxy trainer's end-to-end stage trains the encoder this way
            (:mod:`densenas.evaluation.proxy`).

    Attributes:
        encoder: the built encoder.
        shapes: ``{level name: ShapeSpec}`` of the outputs, in forward order.

    Example:
        >>> m = DenseNASBackbone(dict(type="mobilenet_v2", out_indices=(6, 13, 17), pretrained=False))
        >>> m.out_channels
        [32, 96, 320]
    """

    def __init__(self, backbone: Mapping[str, Any], init_cfg: dict | list | None = None, norm_eval: bool = False):
        super().__init__(init_cfg)
        self.backbone_cfg = dict(backbone)
        self.norm_eval = bool(norm_eval)
        self.encoder, self.shapes = build_backbone(self.backbone_cfg)

    def train(self, mode: bool = True) -> "DenseNASBackbone":
        """``nn.Module.train``, with the BatchNorm layers left in eval mode under ``norm_eval``."""
        super().train(mode)
        if mode and self.norm_eval:
            from ..evaluation.common import set_norm_eval  # the proxy trainer's; loaded only when needed

            set_norm_eval(self)
        return self

    @property
    def out_channels(self) -> list[int]:
        """Channels of every output, in forward order (the ``in_channels`` of a neck or decode head)."""
        return [s.channels for s in self.shapes.values()]

    @property
    def strides(self) -> list[int]:
        """Stride of every output, in forward order."""
        return [s.stride for s in self.shapes.values()]

    def feature_shapes(self) -> list[ShapeSpec]:
        """The :class:`ShapeSpec` of every output, in forward order."""
        return list(self.shapes.values())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Feature maps of ImageNet-normalised images ``(N, 3, H, W)``, finest first."""
        return tuple(self.encoder(x))
