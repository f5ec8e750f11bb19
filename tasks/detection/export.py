"""Export a found detection neck/head (or a hand-designed FPN baseline) as a self-contained mmdet config.

Found architectures come from the NAS-FCOS space (Wang, Gao, Chen, Wang, Tian, Shen, "NAS-FCOS: Fast Neural
Architecture Search for Object Detection", CVPR 2020: searched FPN and/or searched FCOS head) or the NAS-FPN
space (Ghiasi, Lin, Le, "NAS-FPN: Learning Scalable Feature Pyramid Architecture for Object Detection",
CVPR 2019: searched pyramid on a RetinaNet or FCOS head). The baselines are mmdet's hand-designed FPN (Lin
et al., CVPR 2017) with the FCOS head (Tian et al., ICCV 2019) or the RetinaNet head (Lin et al., ICCV 2017).

Every model sits on the same pretrained ``DenseNASBackbone`` (the search's backbone; default MobileNetV2
C3..C5, ``out_indices=(6, 13, 17)``), and
found and baseline configs come from the same function (:func:`detection_config`): data pipeline, schedule,
optimizer and evaluation (mmdet's ``CocoMetric``, COCO AP through pycocotools) are identical; only
``model.neck`` / ``model.bbox_head`` (and, for RetinaNet, the detector type) differ. Run the configs with
``tools/train.py`` and ``tools/test.py`` (the mmengine ``Runner``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from densenas.arch import Arch
from densenas.export import dump_config, runtime_config

from .losses import head_losses

BASELINES = ("fpn_fcos", "fpn_retinanet")
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
OUT_INDICES = (6, 13, 17)

#: this task's config bases (data per layout, schedule, runtime), composed by every export
BASES = Path(__file__).parent / "configs" / "_base_"


def _backbone(backbone: Mapping[str, Any] | None, pretrained: bool) -> dict[str, Any]:
    """The backbone config (default MobileNetV2 C3..C5) with ``pretrained`` set."""
    return {**(dict(backbone) if backbone else {"type": "mobilenet_v2", "out_indices": OUT_INDICES}),
            "pretrained": pretrained}


def _in_channels(backbone: Mapping[str, Any]) -> list[int]:
    """Channels of the backbone's levels, from its feature info (never hard-coded)."""
    from densenas.backbones import backbone_shapes

    return [s.channels for s in backbone_shapes(dict(backbone)).values()]


def _fcos_head(num_classes: int, width: int, feat_channels: int) -> dict[str, Any]:
    """mmdet's ``FCOSHead`` with the losses and GroupNorm groups of the searched NAS-FCOS head layers.

    The groups keep >= 4 channels each (:func:`~densenas.decoders.nasfcos_ops.gn_groups`): at small widths,
    ``gcd(32, C)`` groups of one channel fail on the 1x1 P7 maps of small images.
    """
    from densenas.decoders.nasfcos_ops import gn_groups

    return dict(type="FCOSHead", num_classes=num_classes, in_channels=width, stacked_convs=4,
                feat_channels=feat_channels, strides=[8, 16, 32, 64, 128],
                norm_cfg=dict(type="GN", num_groups=gn_groups(feat_channels), requires_grad=True),
                **head_losses("fcos"))


def baseline_model(baseline: str, num_classes: int, *, width: int = 64, head_width: int | None = None,
                   pretrained: bool = True, backbone: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hand-designed detector: mmdet ``FPN`` (P3..P7) + ``FCOSHead`` or ``RetinaHead`` on a backbone.

    Args:
        baseline: one of :data:`BASELINES`.
        num_classes: object classes.
        width: FPN channels.
        head_width: head tower channels (default ``width``).
        pretrained: load the offline ImageNet backbone weights.
        backbone: a :mod:`densenas.backbones` config giving C3..C5 (default MobileNetV2).

    Raises:
        ValueError: an unknown baseline.
    """
    from densenas.decoders.nasfpn_mmdet import _head

    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: use one of {list(BASELINES)}")
    feat = int(head_width or width)
    bb = _backbone(backbone, pretrained)
    neck = dict(type="FPN", in_channels=_in_channels(bb), out_channels=int(width), start_level=0,
                add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True)
    model = dict(
        type="FCOS" if baseline == "fpn_fcos" else "RetinaNet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True,
                               pad_size_divisor=32 if baseline == "fpn_fcos" else 128),
        backbone=dict(type="DenseNASBackbone", backbone=bb),
        neck=neck,
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type="nms", iou_threshold=0.6 if baseline == "fpn_fcos" else 0.5),
                      max_per_img=100))
    if baseline == "fpn_fcos":  # the same head settings as the NAS-FCOS exports (they differ only in towers)
        model["bbox_head"] = _fcos_head(num_classes, int(width), feat)
    else:  # the same head and assigner as the NAS-FPN (RetinaNet) exports
        model["bbox_head"] = _head("retinanet", num_classes, int(width), feat, 4, [8, 16, 32, 64, 128],
                                   head_losses("retinanet"))
        model["train_cfg"] = dict(
            assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                          ignore_iof_thr=-1),
            sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False)
    return model


def found_model(arch: Arch, num_classes: int, *, space: Mapping[str, Any] | None = None,
                task: Mapping[str, Any] | None = None, width: int | None = None, pretrained: bool = True,
                backbone: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The detector of a found arch, as its space writes it, and the modules to put in ``custom_imports``.

    The space is found through the space plugins (the search's ``space.type``, else the arch's space name:
    NAS-FCOS parts such as ``nasfcos_fpn`` are archs of ``nasfcos``); it must output ``detector``. It writes the
    mmdet model (``SearchSpace.mm_fragment(arch, "detector")``: its ``mm_detector``) from its export options
    (``SearchSpace.export_options`` of ``space``) with this task's head losses: those of the head family the
    space builds (``head_detector``: NAS-FCOS's FCOS head), else of ``task["detector"]`` (default RetinaNet).

    Args:
        arch: the found arch.
        num_classes: object classes.
        space: the search's ``space`` section (widths, ops, fixed part); default: the space's defaults.
        task: the search's ``task`` section (NAS-FPN: ``detector``, ``stacked_convs``, ``feat_channels``).
        width: override the pyramid width of the search.
        pretrained: load the offline ImageNet backbone weights.
        backbone: a :mod:`densenas.backbones` config giving C3..C5 (default MobileNetV2).

    Raises:
        InvalidArch: the arch does not fit the space (names the field).
        ValueError: an arch of a space that is not a detector, or of another space than ``space.type``, or
            space settings the space does not take.
    """
    from densenas.space import export_space_class

    from .task import DetectionTask

    bb = _backbone(backbone, pretrained)
    section = dict(space or {})
    cls = export_space_class(arch, section or None, accepts=DetectionTask.accepts, task=DetectionTask.name)
    head_opts = {k: v for k, v in dict(task or {}).items() if k in ("detector", "stacked_convs", "feat_channels")}
    family = getattr(cls, "head_detector", None) or head_opts.get("detector", "retinanet")
    options = {**cls.export_options(arch, section), "width": width}
    model = cls.mm_fragment(arch, "detector", options=options, num_classes=num_classes, losses=head_losses(family),
                            backbone=bb, in_channels=_in_channels(bb), **head_opts)
    imports = ["densenas.tasks.detection.mm"]
    return model, imports + [m for m in cls.mm_imports if m not in imports]


def det_data_config(data_root: str | Path, layout: str, crop: int, classes: tuple[str, ...],
                    batch_size: int, workers: int, train_split: str = "train",
                    val_split: str = "val", log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Dataloaders and evaluators: mmdet's CocoDataset/VOCDataset, COCO AP (or VOC mAP) on ``val_split``.

    A COCO file without fields that pycocotools reads (top-level ``info``: 2.0.9 / 2.0.10 crash on it at the
    first validation; an annotation's ``iscrowd``: every ``COCOeval``) is evaluated by ``DenseNASCocoMetric``,
    which fills them in memory; ``log`` says so, with the fix for the file. Complete files get mmdet's plain
    ``CocoMetric``.
    """
    from densenas.datasets.detfolder import mmdet_dataset_cfg

    root = Path(data_root).resolve()
    resize = dict(type="Resize", scale=(crop, crop), keep_ratio=True)
    train_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True), resize,
                      dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
    test_pipeline = [dict(type="LoadImageFromFile"), resize, dict(type="LoadAnnotations", with_bbox=True),
                     dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                           "scale_factor"))]
    train_ds = mmdet_dataset_cfg(root, train_split, layout, train_pipeline, classes)
    train_ds["filter_cfg"] = dict(filter_empty_gt=True, min_size=2)
    val_ds = mmdet_dataset_cfg(root, val_split, layout, test_pipeline, classes, test_mode=True)
    if layout == "coco":
        ann = root / "annotations" / f"instances_{val_split}.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{ann} not found: build the proxy set first (tools/search.py does) "
                                    f"or pass --data-root")
        from .data import coco_file_gaps, coco_gaps_note

        gaps = coco_file_gaps(ann)
        if gaps and log is not None:
            log(coco_gaps_note(ann, gaps))
        evaluator = dict(type="DenseNASCocoMetric" if gaps else "CocoMetric", ann_file=str(ann),
                         metric="bbox", format_only=False)
    else:
        evaluator = dict(type="VOCMetric", metric="mAP", eval_mode="11points")
    loader = dict(num_workers=workers, persistent_workers=workers > 0)
    val_loader = dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False), dataset=val_ds,
                      drop_last=False, **loader)
    return dict(
        train_dataloader=dict(batch_size=batch_size, sampler=dict(type="InfiniteSampler", shuffle=True),
                              batch_sampler=dict(type="AspectRatioBatchSampler"), dataset=train_ds, **loader),
        val_dataloader=val_loader, test_dataloader=dict(val_loader),
        val_evaluator=evaluator, test_evaluator=dict(evaluator))


def detection_config(path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
                     space: Mapping[str, Any] | None = None, task: Mapping[str, Any] | None = None,
                     data_root: str | Path = "data/proxy_coco", layout: str = "coco", crop: int = 128,
                     width: int | None = None, head_width: int | None = None, iters: int = 2000,
                     lr: float = 1e-3, optimizer: str = "adamw", schedule: str = "cosine",
                     batch_size: int = 8, val_interval: int | None = None, workers: int = 2,
                     work_dir: str | None = None, seed: int = 0, classes: tuple[str, ...] | int | None = None,
                     train_split: str = "train", val_split: str = "val",
                     backbone: Mapping[str, Any] | None = None, log: Callable[[str], Any] | None = print) -> Path:
    """Write an mmdet config for a found detection ``arch`` or a ``baseline``; returns the path.

    Args:
        path: config file to write.
        arch: the found arch (of a space whose output kind is ``detector``: NAS-FCOS, NAS-FPN, a plugin's).
        baseline: ``"fpn_fcos"`` or ``"fpn_retinanet"`` (exactly one of ``arch`` / ``baseline``).
        space: the search's ``space`` section (widths as searched; NAS-FCOS ops and fixed part).
        task: the search's ``task`` section (NAS-FPN detector and head options).
        data_root: dataset root (COCO layout: ``annotations/instances_<split>.json`` + ``<split>/``).
        layout: ``"coco"`` or ``"voc"``.
        crop: images are resized to fit ``crop`` x ``crop`` (keeping the aspect ratio).
        width: pyramid width (default: the search's, else 64).
        head_width: baseline head width (default ``width``).
        iters: training iterations.
        lr: peak learning rate.
        optimizer: ``"adamw"`` (weight decay 1e-4) or ``"sgd"`` (momentum 0.9, weight decay 1e-4).
        schedule: ``"cosine"`` or ``"step"`` (x0.1 at 2/3 and 8/9 of ``iters``), after a linear warmup.
        batch_size: training images per iteration.
        val_interval: iterations between evaluations (default ``iters``).
        workers: dataloader workers.
        work_dir: the config's ``work_dir``.
        seed: random seed.
        classes: class names, or a count: the first that many of the defaults (default: the COCO file's
            categories by id / the 20 VOC classes).
        train_split: training split name.
        val_split: evaluation split name.
        backbone: the search's ``backbone`` section (default MobileNetV2 C3..C5, ImageNet weights).
        log: notes about the data (a COCO file lacking ``info`` / ``iscrowd``); ``None``: silent.

    Raises:
        ValueError: bad arguments or an arch that does not fit its space.
        FileNotFoundError: the annotation file is missing.
    """
    if (arch is None) == (baseline is None):
        raise ValueError("give exactly one of arch= or baseline=")
    if layout not in ("coco", "voc"):
        raise ValueError(f"layout {layout!r}: use 'coco' or 'voc'")
    if optimizer not in ("adamw", "sgd") or schedule not in ("cosine", "step"):
        raise ValueError(f"optimizer {optimizer!r} / schedule {schedule!r}: use adamw|sgd and cosine|step")
    if iters < 1 or crop < 32:
        raise ValueError(f"need iters >= 1 and crop >= 32, got {iters}, {crop}")
    if classes is None or isinstance(classes, int):
        if layout == "coco":
            from densenas.datasets.proxy_det import coco_classes

            names = coco_classes(data_root, train_split)
        else:
            from densenas.datasets.detfolder import VOC_DET_CLASSES
            names = tuple(VOC_DET_CLASSES)
        if isinstance(classes, int) and not 1 <= classes <= len(names):
            where = f"{data_root} (instances_{train_split}.json)" if layout == "coco" else "the VOC layout"
            raise ValueError(f"classes={classes}: {where} names {len(names)} classes {list(names)}; "
                             f"give a count in 1..{len(names)} or the class names")
        classes = names if classes is None else names[:classes]
    num_classes = len(classes)
    if arch is not None:
        model, imports = found_model(arch, num_classes, space=space, task=task, width=width, backbone=backbone)
    else:
        sp = dict(space or {})
        w = width or sp.get("width") or sp.get("out_channels") or 64
        model = baseline_model(baseline, num_classes, width=int(w),
                               head_width=head_width or sp.get("head_width") or sp.get("feat_channels"),
                               backbone=backbone)
        imports = ["densenas.tasks.detection.mm"]
    warmup = max(1, min(200, iters // 10))
    sched: list[dict[str, Any]] = [dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0,
                                        end=warmup)]
    if schedule == "cosine":
        sched.append(dict(type="CosineAnnealingLR", eta_min=lr * 1e-2, begin=warmup, end=iters,
                          T_max=max(iters - warmup, 1), by_epoch=False))
    else:
        sched.append(dict(type="MultiStepLR", begin=0, end=iters, by_epoch=False, gamma=0.1,
                          milestones=[iters * 2 // 3, iters * 8 // 9]))
    opt = dict(type="AdamW", lr=lr, weight_decay=1e-4) if optimizer == "adamw" else \
        dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4)
    interval = val_interval or iters
    best = "coco/bbox_mAP" if layout == "coco" else "pascal_voc/mAP"
    cfg = dict(
        densenas_task="detection",  # which densenas task plugin tools/test.py asks about this model
        default_scope="mmdet",
        custom_imports=dict(imports=imports, allow_failed_imports=False),
        model=model,
        **det_data_config(data_root, layout, crop, tuple(classes), batch_size, workers, train_split, val_split,
                          log),
        optim_wrapper=dict(type="OptimWrapper", optimizer=opt, clip_grad=dict(max_norm=35, norm_type=2),
                           # the pretrained encoder learns 10x slower than the new neck and head
                           paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)})),
        param_scheduler=sched,
        **runtime_config(iters, interval, best, rule="greater", seed=seed,
                         work_dir=work_dir or f"work_dirs/det_{arch.space if arch is not None else baseline}",
                         visualizer="DetLocalVisualizer", vis_hook="DetVisualizationHook"))
    bases = [f"datasets/det_{layout}.py", "schedules/det_adamw_cosine_2k.py", "det_runtime.py"]  # ./configs/_base_
    return dump_config(cfg, path, bases=bases, base_root=BASES)


def empty_metric_note(split: str) -> str:
    """Why a val/test metric came back as ``{}``: mmdet's CocoMetric returns nothing when no box was detected.

    Args:
        split: ``"val"`` or ``"test"``, named in the message.
    """
    return (f"note: the {split} metric returned nothing; mmdet's CocoMetric does this when the model made no "
            f"detection above test_cfg.score_thr on the whole {split} set (too few training iterations?)")
