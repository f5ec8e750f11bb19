"""``DenseNASBackbone`` (any backbone of :mod:`densenas.backbones`) in mmseg's ``MODELS``, registered once
here for every task whose exported configs are mmseg models (segmentation, depth), so neither imports the
other for it."""
from __future__ import annotations

from mmseg.registry import MODELS

from densenas.backbones import DenseNASBackbone

if MODELS.get("DenseNASBackbone") is not DenseNASBackbone:
    MODELS.register_module(module=DenseNASBackbone)
