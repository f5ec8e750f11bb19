"""The object-detection task plugin: necks and heads searched inside mmdet (NAS-FCOS, Wang et al.,
CVPR 2020; NAS-FPN, Ghiasi et al., CVPR 2019), scored with the two-stage proxy trainer of Nekrasov et al.

Data: the proxy COCO set, COCO json or VOC xml (:mod:`.data`); candidates: an mmdet single-stage
detector's neck and dense head on cached backbone features (:mod:`.candidate`); metrics: COCO AP
(pycocotools) and the negative validation loss (:mod:`.metrics`); reward: ``neg_loss`` (NAS-FCOS) or
``ap`` (NAS-FPN); export: an mmdet config (:mod:`.export`, registrations in :mod:`.mm`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from densenas.arch import Arch
from densenas.export import fill_defaults
from densenas.space import SearchSpace, ShapeSpec
from densenas.task import Task

from .candidate import REWARDS, DetTargets, build_det_candidate
from .data import DetData, build_det_data

DETECTORS = ("fcos", "retinanet")


class DetectionTask(Task):
    """Object detection with mmdet's single-stage detectors.

    Args:
        reward: ``"neg_loss"`` (minus the summed detection losses on the val set, as NAS-FCOS rewards its
            candidates) or ``"ap"`` (COCO box AP@[.5:.95], NAS-FPN's proxy reward). Both are recorded.
        detector: NAS-FPN only: ``"retinanet"`` or ``"fcos"`` head (NAS-FCOS is always FCOS).
        stacked_convs: NAS-FPN only: convs per head tower.
        feat_channels: NAS-FPN only: head width (default the pyramid width).
        score_thr: detection score threshold at validation (low, as in COCO evaluation).
    """

    name = "detection"
    accepts = ("detector",)
    spaces = ("nasfcos", "nasfpn")
    report_metrics = (("ap", "AP"), ("ap50", "AP50"), ("neg_loss", "-loss"))
    default_scope = "mmdet"
    baselines = ("fpn_fcos", "fpn_retinanet")
    baselines_note = "mmdet FPN with the FCOS or RetinaNet head, --width pyramid channels"
    export_help = {
        "layout": "coco (default) or voc", "data_root": "default: the search's data root, else data/proxy_coco",
        "classes": "a count or comma-separated names (default: the search's, else the annotation file's)",
        "optimizer": "adamw (default) or sgd", "crop": "images resized to fit crop x crop (default 128)",
        "width": "pyramid channels (default: as searched, else 64)", "iters": "default 2000", "lr": "default 1e-3",
        "batch_size": "default 8"}
    test_metric = (r"bbox_map$", True)  # tools/test.py's headline metric (tools/fidelity.py --final-iters)

    def __init__(self, reward: str = "neg_loss", detector: str = "fcos", stacked_convs: int = 4,
                 feat_channels: int | None = None, score_thr: float | None = 0.001):
        if reward not in REWARDS:
            raise ValueError(f"task.reward={reward!r}: use one of {list(REWARDS)}")
        if detector not in DETECTORS:
            raise ValueError(f"task.detector={detector!r}: use one of {list(DETECTORS)}")
        self.reward_key, self.detector = reward, detector
        self.stacked_convs, self.feat_channels, self.score_thr = int(stacked_convs), feat_channels, score_thr
        self.reward_label = f"reward ({reward})"
        self.data: DetData | None = None
        self.targets: DetTargets | None = None

    # ------------------------------------------------------------------ data
    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        self.data = build_det_data(dict(data_cfg), source=source, log=log)
        self.targets = DetTargets(self.data.train, self.data.val, len(self.data.classes), self.reward_key)

    def _data(self) -> DetData:
        if self.data is None:
            raise RuntimeError("call build_data() first")
        return self.data

    def space_defaults(self) -> dict[str, Any]:
        return {"num_classes": len(self._data().classes)}

    # ------------------------------------------------- candidate searches
    def images(self, split: str) -> Tensor:
        return self._data().train[0] if split == "train" else self._data().val[0]

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        return build_det_candidate(space, arch, shapes, len(self._data().classes), detector=self.detector,
                                   stacked_convs=self.stacked_convs, feat_channels=self.feat_channels,
                                   score_thr=self.score_thr)

    def reward(self, metrics: Mapping[str, float]) -> float:
        return float(metrics[self.reward_key])

    # ------------------------------------------------------------ test time
    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        """The whole detector up to the raw head outputs (no box decoding or NMS)."""
        from densenas.costs import count_params
        from densenas.task import TensorForward

        def flat(m: nn.Module, x: Tensor) -> tuple[Tensor, ...]:  # per-output lists of per-level maps
            out = m._forward(x)
            return tuple(t for part in out for t in (part if isinstance(part, (list, tuple)) else [part])
                         if isinstance(t, Tensor))

        return TensorForward(model, flat), count_params(model), 3, " (whole detector)"

    def deploy_outputs(self, outputs: list[Tensor], cfg: Any) -> list[str]:
        """``cls_score_p3`` ... per level: the head's outputs in the order ``_forward`` returns them
        (FCOS: class scores, box distances, centerness; RetinaNet: class scores, box deltas)."""
        head = str(cfg.model.get("bbox_head", {}).get("type", ""))
        parts = ["cls_score", "bbox_pred", "centerness"] if "FCOS" in head else ["cls_score", "bbox_pred"]
        if len(outputs) % len(parts):
            return super().deploy_outputs(outputs, cfg)
        levels = len(outputs) // len(parts)
        return [f"{p}_p{3 + i}" for p in parts for i in range(levels)]

    def deploy_note(self, cfg: Any) -> str:
        head = cfg.model.get("bbox_head", {}).get("type", "the head")
        return (f"raw {head} maps per pyramid level (stride 8 first); box decoding, score threshold and NMS "
                f"are outside the graph: mmdet's {head}.predict_by_feat (ONNX's NonMaxSuppression is not "
                "mmdet's batched, per-class NMS with its test_cfg)")

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        size = super().test_size(cfg, runner)  # the preprocessor pads every batch to this multiple
        div = int(cfg.model.get("data_preprocessor", {}).get("pad_size_divisor", 1) or 1)
        return tuple(-(-s // div) * div for s in size)

    def metric_note(self, split: str) -> str:
        from .export import empty_metric_note

        return empty_metric_note(split)

    # ------------------------------------------------------------ export
    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmdet config (see :func:`.export.detection_config`) with the searched space, head options,
        classes and backbone of ``search_cfg``."""
        from .export import detection_config

        search_cfg = dict(search_cfg or {})
        data = dict(search_cfg.get("data") or {})
        # the data the arch was searched on, unless the user names other data: the final rung and a user's own
        # set fine-tune where the search ran (the proxy COCO set is in the COCO layout)
        if options.get("data_root") is None and data.get("root"):
            options["data_root"] = str(data["root"])
            if options.get("layout") is None and data.get("layout") == "voc":
                options["layout"] = "voc"
        fill_defaults(options, data_root="data/proxy_coco", crop=128, lr=1e-3, iters=2000)
        if options.get("classes") is None and data.get("classes"):
            options["classes"] = tuple(data["classes"])
        if search_cfg.get("backbone") and options.get("backbone") is None:
            options["backbone"] = dict(search_cfg["backbone"])
        task = {k: v for k, v in dict(search_cfg.get("task") or {}).items() if k != "type"}
        return detection_config(path, arch=arch, baseline=baseline, space=search_cfg.get("space") or None,
                                task=task or None, **options)
