"""Any timm model as a multi-scale encoder (``features_only``), with shapes from its ``feature_info``.

The decoders searched as in "Fast Neural Architecture Search of Compact Semantic Segmentation Models via
Auxiliary Cells" (Nekrasov et al., CVPR 2019) only need a list of feature maps and their
:class:`~densenas.space.ShapeSpec` s; :class:`TimmEncoder` provides both for any model that timm can build
with ``features_only=True``. Channels and strides come from timm's ``feature_info`` (``channels()``,
``reduction()``), so nothing is measured or hard-coded.

Inputs are ImageNet-normalised images; :class:`~densenas.backbones.common.InputNorm` maps them to the
normalisation the weights were trained with (``mean``/``std``).

timm never downloads here: ``pretrained=True`` needs a local ``checkpoint`` (read with
``weights_only=True`` and handed to timm as an in-memory state dict).
"""
from __future__ import annotations

import difflib
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..space import ShapeSpec
from .common import IMAGENET_MEAN, IMAGENET_STD, InputNorm, load_checkpoint


def _timm():
    """Import timm (slow, so only when a timm-based encoder is built)."""
    try:
        with warnings.catch_warnings():
            # timm's hrnet module uses ``torch.jit.interface`` (deprecated in torch 2.14): a notice about
            # third-party code at import time, shown before every run otherwise
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated",
                                    category=FutureWarning)
            import timm
    except ImportError as e:  # pragma: no cover - timm is a declared dependency
        raise ImportError("the timm backbones need `timm` (installed by tools/install.sh)") from e
    return timm


def create_timm_features(model_name: str, out_indices: Sequence[int] | None = None,
                         state_dict: Mapping[str, torch.Tensor] | None = None,
                         model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``timm.create_model(model_name, features_only=True)`` without any download.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        out_indices: timm feature levels to return (indices into the model's ``feature_info``); ``None``
            keeps timm's default (every level).
        state_dict: weights of the full model, handed to timm in memory (its own key filter and
            classifier handling apply); ``None`` keeps the random initialisation.
        model_kwargs: further keyword arguments of ``timm.create_model``.

    Returns:
        The feature model; ``forward`` returns a list of maps, finest first.

    Raises:
        ValueError: unknown model name (naming ``backbone.model_name`` and close matches).
    """
    timm = _timm()
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise ValueError(f"backbone.model_name={model_name!r} is not a timm model"
                         f"{f' (did you mean {close}?)' if close else ''}; see timm.list_models()")
    kwargs = dict(model_kwargs or {})
    for key in ("features_only", "pretrained", "pretrained_cfg_overlay", "out_indices", "checkpoint_path"):
        if key in kwargs:
            raise ValueError(f"backbone.model_kwargs.{key} is set by densenas; use the backbone keys instead")
    if out_indices is not None:
        kwargs["out_indices"] = tuple(int(i) for i in out_indices)
    if state_dict is not None:
        # an in-memory state dict is timm's first weight source: no url, hub id or file is consulted
        kwargs["pretrained_cfg_overlay"] = dict(state_dict=dict(state_dict), url="", file=None,
                                                hf_hub_id=None, source=None)
    return timm.create_model(model_name, features_only=True, pretrained=state_dict is not None, **kwargs)


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model returning a list of feature maps, finest first.

    Args:
        model_name: any timm model name that supports ``features_only`` (e.g. ``"resnet18"``,
            ``"mobilenetv3_small_100"``).
        out_indices: timm feature levels (indices into ``feature_info``, usually 0..4 for strides
            2..32); ``None`` returns every level.
        pretrained: load ``checkpoint``. timm's own weights are never downloaded, so ``True`` needs a
            local ``checkpoint``.
        checkpoint: path of a state dict of the full timm model (``.pth``, read with ``weights_only``).
        mean: per-channel mean (images in 0..1) the weights expect; ``None``: the model's timm
            ``pretrained_cfg`` value. Inputs stay ImageNet-normalised (see :class:`InputNorm`).
        std: per-channel std, as ``mean``.
        model_kwargs: further keyword arguments of ``timm.create_model`` (e.g. ``output_stride``).

    Example:
        >>> enc = TimmEncoder("resnet18", out_indices=(1, 2, 3, 4))
        >>> [(s.channels, s.stride) for s in enc.feature_shapes()]
        [(64, 4), (128, 8), (256, 16), (512, 32)]
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] | None = None, pretrained: bool = False,
                 checkpoint: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, model_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        if pretrained and not checkpoint:
            raise ValueError(
                f"backbone.pretrained=True for timm model {model_name!r} needs backbone.checkpoint (a local "
                f"state dict file): densenas never downloads weights, so timm's cannot be fetched")
        if checkpoint and not pretrained:
            raise ValueError(f"backbone.checkpoint={checkpoint!r} is only read with backbone.pretrained=True")
        sd = load_checkpoint(checkpoint, "backbone.checkpoint") if checkpoint else None
        self.body = create_timm_features(model_name, out_indices, sd, model_kwargs)
        self._init_common(model_name, pretrained, mean, std)

    def _init_common(self, model_name: str, pretrained: bool, mean: Sequence[float] | None,
                     std: Sequence[float] | None) -> None:
        """Shapes, ``out_indices`` and input normalisation from the built ``self.body``."""
        info = self.body.feature_info
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.model_name = model_name
        self.pretrained = bool(pretrained)
        self.out_indices = tuple(int(i) for i in info.out_indices)
        self._shapes = [ShapeSpec(int(c), int(r)) for c, r in zip(info.channels(), info.reduction())]
        self.input_norm = InputNorm(mean if mean is not None else cfg.get("mean", IMAGENET_MEAN),
                                    std if std is not None else cfg.get("std", IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder.

        Args:
            x: images ``(N, 3, H, W)``, ImageNet-normalised.

        Returns:
            One feature map per entry of ``out_indices``, finest first.
        """
        return list(self.body(self.input_norm(x)))

    def feature_shapes(self, size: int = 64) -> list[ShapeSpec]:
        """Channels and stride of every output, from timm's ``feature_info`` (no forward pass).

        Args:
            size: unused; kept so every encoder answers ``feature_shapes(size)`` alike.

        Returns:
            One :class:`ShapeSpec` per output, in the order of :meth:`forward`.
        """
        return list(self._shapes)
