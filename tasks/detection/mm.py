"""OpenMMLab registrations of the detection task: the one module exported mmdet configs import.

``custom_imports=dict(imports=["densenas.tasks.detection.mm"], allow_failed_imports=False)`` registers,
once and without ``force=True``, in mmdet's ``MODELS``: the backbone ``DenseNASBackbone``, the NAS-FCOS
neck and head (Wang et al., CVPR 2020) and the NAS-FPN neck (Ghiasi et al., CVPR 2019); in ``METRICS``:
``DenseNASCocoMetric`` (``CocoMetric`` for annotation files without ``info`` / ``iscrowd``).
"""
from __future__ import annotations

import warnings
from typing import Any

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS, MODELS

from densenas.backbones import DenseNASBackbone
from densenas.decoders.mmdet_adapters import NASFCOSSearchedFPN, NASFCOSSearchedHead
from densenas.decoders.nasfpn_mmdet import NASFPNSearchedNeck

from .data import fill_coco_gaps


class DenseNASCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` for a COCO json without fields that pycocotools reads.

    pycocotools 2.0.9 and 2.0.10 copy ``dataset['info']`` in ``COCO.loadRes``, and every version's ``COCOeval``
    reads each ground-truth annotation's ``iscrowd``; a hand-made annotation file often has neither, passes a
    search (which never reads them) and then crashed the fine-tune at its first validation (``KeyError``).
    This metric fills each absent field with its neutral value (:func:`.data.fill_coco_gaps`: ``info = {}``,
    ``iscrowd = 0``) in the ground truth it loaded, in memory (the file is left alone); everything else is
    ``CocoMetric`` unchanged: same arguments, same ``coco/bbox_mAP`` keys, same numbers, whatever
    pycocotools is installed.

    Why a metric: its ``_coco_api`` is the one COCO object that ``loadRes`` and ``COCOeval`` run on, so filling
    it there is the narrowest fix. A rewritten copy of the annotation file would go stale and duplicate the
    data, patching pycocotools would change it for every other user, and export-time advice alone leaves the
    fine-tune crashing. :func:`.export.det_data_config` uses it only for a file with such gaps (complete files
    get mmdet's plain ``CocoMetric``) and says so when it writes the config.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._coco_api is not None:  # None: no ann_file, mmdet builds a complete json from the samples
            fill_coco_gaps(self._coco_api.dataset)  # its anns index holds the same dicts: filled too


for _cls in (DenseNASBackbone, NASFCOSSearchedFPN, NASFCOSSearchedHead,
             NASFPNSearchedNeck):
    MODELS.register_module(module=_cls)
METRICS.register_module(module=DenseNASCocoMetric)

# mmdet 3.3's point/anchor generators call torch.meshgrid without ``indexing``; the result is the same
# ('ij' is the default), so silence exactly that deprecation notice in every detection run.
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
