"""The detection task's losses, handed to every detector it builds (search candidates and exports alike):
the decoders' mmdet adapters take them as an argument and hold none (a search space knows no loss).

FCOS (Tian et al., ICCV 2019) as NAS-FCOS (Wang et al., CVPR 2020) trains it: sigmoid focal loss
(Lin et al., ICCV 2017; gamma 2, alpha 0.25) on the classes, IoU loss on the box distances, binary
cross-entropy on the centerness. RetinaNet (Lin et al.), as NAS-FPN (Ghiasi et al., CVPR 2019) trains it:
the same focal loss, L1 on the box deltas. mmdet's configs for these detectors use the same settings.
"""
from __future__ import annotations

import copy
from typing import Any

FOCAL = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
LOSSES: dict[str, dict[str, dict[str, Any]]] = {
    "fcos": dict(loss_cls=FOCAL, loss_bbox=dict(type="IoULoss", loss_weight=1.0),
                 loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
    "retinanet": dict(loss_cls=FOCAL, loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
}


def head_losses(detector: str) -> dict[str, dict[str, Any]]:
    """The ``loss_*`` keys of a ``detector`` head (``fcos`` or ``retinanet``), a fresh copy."""
    if detector not in LOSSES:
        raise ValueError(f"detector {detector!r}: use one of {list(LOSSES)}")
    return copy.deepcopy(LOSSES[detector])
