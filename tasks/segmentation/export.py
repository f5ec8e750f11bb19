"""Export a found architecture (or a hand-designed baseline head) as an mmsegmentation config.

The config composes this task's ``_base_`` files (``configs/_base_/``: the dataset layout, the schedule, the
runtime; copied next to it, :func:`densenas.export.compose_config`) and states the model (``DenseNASBackbone``:
any registered backbone with its offline ImageNet weights + the found arch's decode head as its space writes it,
e.g. ``AuxCellHead``, or an mmseg baseline head; a whole searched network, e.g. Auto-DeepLab's, as its space
writes it) and what differs from the bases (data root, classes, crop, iterations), ready for ``tools/train.py``
(the mmengine ``Runner``). Baseline and found model are exported by the same function, so both fine-tune under
exactly the same data pipeline and budget.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from densenas.arch import Arch
from densenas.export import dump_config, runtime_config
from densenas.space import SearchSpace, ShapeSpec, export_space_class

from .compact import COMPACT, compact_model

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
BASELINES = ("aspp", "deeplabv3plus", "lraspp", "fcn", *COMPACT)

#: this task's config bases (data per layout, schedule, runtime), composed by every export
BASES = Path(__file__).parent / "configs" / "_base_"


def _palette(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map of the first ``n`` classes, as mmseg and the VOC devkit define it."""
    from densenas.datasets.proxy import voc_palette

    flat = voc_palette()
    return [flat[3 * i:3 * i + 3] for i in range(n)]


def _manifest_classes(data_root: str | Path) -> list[str] | None:
    """The class names of the densenas proxy manifest under ``data_root``; ``None`` when there is none."""
    manifest = Path(data_root) / "densenas_proxy.json"
    return list(json.loads(manifest.read_text())["classes"]) if manifest.is_file() else None


def default_class_names(dataset: str, num_classes: int, data_root: str | Path | None = None) -> list[str]:
    """Names for ``num_classes`` classes given only by their count.

    The proxy manifest's names when ``data_root`` holds one with that many classes; else the first
    ``num_classes`` of the layout's own classes (VOC: background + 20, Cityscapes: 19), as a search's
    ``data.num_classes`` names them; more classes than the layout has are ``class0``, ``class1``, ... (as
    :class:`~densenas.datasets.segfolder.SegmentationFolder` names them).

    Raises:
        ValueError: ``num_classes < 1``.
    """
    from densenas.datasets.segfolder import CITYSCAPES_CLASSES

    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    named = _manifest_classes(data_root) if data_root is not None and dataset != "cityscapes" else None
    if named is not None and len(named) == num_classes:
        return named
    names = CITYSCAPES_CLASSES if dataset == "cityscapes" else VOC_CLASSES
    return list(names[:num_classes]) if num_classes <= len(names) else [f"class{i}" for i in range(num_classes)]


def data_classes(dataset: str, data_root: str | Path, log: Callable[[str], Any] | None = print) -> list[str]:
    """The classes of the data at ``data_root`` when neither the user nor the search named them.

    ``proxy``: the proxy manifest's names. ``voc``: a proxy manifest's names if ``data_root`` holds one, else
    as many classes as the label masks of the train and val lists need (:func:`.data.scan_voc_labels`, said
    through ``log``), named by :func:`default_class_names`. ``cityscapes``: its 19 train ids.

    Raises:
        FileNotFoundError: no proxy manifest (``proxy``); no labels to count (``voc``: names the path and
            suggests ``--classes``).
        ValueError: unreadable masks (names the file).
    """
    if dataset == "cityscapes":
        return default_class_names(dataset, 19)
    named = _manifest_classes(data_root)
    if named is not None:  # the proxy set (also when named as a VOC layout)
        return named
    if dataset == "proxy":
        raise FileNotFoundError(f"{Path(data_root) / 'densenas_proxy.json'} not found: build the proxy set "
                                f"first (tools/search.py does) or pass --data-root")
    from .data import scan_voc_labels

    try:
        scan = scan_voc_labels(data_root)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"cannot count the classes of {data_root}: {e}; pass --classes (a count or "
                      f"comma-separated names)") from None
    if log is not None:
        log(f"classes: {scan.describe()}")
    return default_class_names(dataset, scan.num_classes)


def data_config(dataset: str, root: str, crop: int, classes: list[str] | None = None,
                batch_size: int = 8, workers: int = 2) -> dict[str, Any]:
    """Dataloaders and evaluators for ``proxy`` / ``voc`` / ``cityscapes`` in their real layouts.

    ``classes`` become the datasets' ``metainfo`` (with the VOC colour map as palette). The VOC layout is read
    by mmseg's ``BaseSegDataset``, not ``PascalVOCDataset``: the latter's fixed 21 classes would turn other
    names into a label map (or refuse names that are not VOC's). Cityscapes keeps ``CityscapesDataset`` for
    its own 19 classes (``classes=None`` or those names); other classes read its layout with
    ``BaseSegDataset`` likewise.
    """
    # absolute: the fine-tune runners (densenas/finetune.py) run the tools from the repository root, whatever
    # the caller's working directory (the shipped configs/finetune files keep relative roots by hand)
    root = str(Path(root).resolve())
    crop_size = (crop, crop) if dataset != "cityscapes" else (crop, crop * 2)
    scale = (crop * 2, crop) if dataset != "cityscapes" else (crop * 4, crop * 2)
    if dataset == "proxy":
        scale = (crop, crop)
    train_pipeline = [
        dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=scale, ratio_range=(0.75, 1.5), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs")]
    test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True),
                     dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    if dataset in ("proxy", "voc"):
        names = list(classes or VOC_CLASSES)
        base = dict(type="BaseSegDataset", data_root=root, img_suffix=".jpg", seg_map_suffix=".png",
                    data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                    metainfo=dict(classes=names, palette=_palette(len(names))))
        train_ds = dict(base, ann_file="ImageSets/Segmentation/train.txt", pipeline=train_pipeline)
        val_ds = dict(base, ann_file="ImageSets/Segmentation/val.txt", pipeline=test_pipeline)
    elif dataset == "cityscapes":
        from densenas.datasets.segfolder import CITYSCAPES_CLASSES

        base = dict(type="CityscapesDataset", data_root=root)
        if classes is not None and tuple(classes) != CITYSCAPES_CLASSES:
            base = dict(type="BaseSegDataset", data_root=root, img_suffix="_leftImg8bit.png",
                        seg_map_suffix="_gtFine_labelTrainIds.png",
                        metainfo=dict(classes=list(classes), palette=_palette(len(classes))))
        train_ds = dict(base, data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"),
                        pipeline=train_pipeline)
        val_ds = dict(base, data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
                      pipeline=test_pipeline)
    else:
        raise ValueError(f"dataset {dataset!r}: use 'proxy', 'voc' or 'cityscapes'")
    loader = dict(num_workers=workers, persistent_workers=workers > 0)
    return dict(
        train_dataloader=dict(batch_size=batch_size, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=train_ds, **loader),
        val_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False),
                            dataset=val_ds, **loader),
        test_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False),
                             dataset=val_ds, **loader),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]))


#: the segmentation task's loss of every exported decode head (found, baseline or Auto-DeepLab's ASPP head):
#: mmseg's pixel-wise cross-entropy, as the search trains candidates (the spaces hold no loss)
LOSS_DECODE = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)


def head_config(arch: Arch | None, baseline: str | None, num_classes: int, in_channels: list[int],
                width: int, widths: list[int] | None = None, *,
                in_shapes: Mapping[str, ShapeSpec] | None = None, **space_options: Any) -> dict[str, Any]:
    """The decode head: a found ``dense_map`` arch's, as its space writes it (``mm_fragment(arch,
    "decode_head")``: ``AuxCellHead``, ``TemplateHead``, a plugin's head), or an mmseg baseline head.

    ``in_shapes`` are the backbone's levels (default: ``in_channels`` at strides 4, 8, 16, ...);
    ``space_options`` the further export options of the arch's space (its ``export_options``)."""
    common = dict(num_classes=num_classes, norm_cfg=dict(type="BN", requires_grad=True),
                  align_corners=False, loss_decode=dict(LOSS_DECODE))
    if arch is not None:
        from densenas.backbones import named_shapes

        shapes = in_shapes or named_shapes([ShapeSpec(int(c), 2 ** (i + 2)) for i, c in enumerate(in_channels)])
        options = dict(width=width, widths=widths, **space_options)
        return _space(arch).mm_fragment(arch, "decode_head", options=options, in_shapes=shapes, **common)
    if baseline == "aspp":  # DeepLab-v3 ASPP on the stride-32 level (the paper's first baseline)
        return dict(type="ASPPHead", in_channels=in_channels[-1], in_index=len(in_channels) - 1,
                    channels=width, dilations=(1, 6, 12, 18), dropout_ratio=0.1, **common)
    if baseline == "deeplabv3plus":  # ASPP on stride 32 + the stride-4 features, like the found decoders
        return dict(type="DepthwiseSeparableASPPHead", in_channels=in_channels[-1],
                    in_index=len(in_channels) - 1, channels=width, dilations=(1, 6, 12, 18),
                    c1_in_channels=in_channels[0], c1_channels=max(width // 4, 8), dropout_ratio=0.1,
                    **common)
    if baseline == "lraspp":
        return dict(type="LRASPPHead", in_channels=tuple(in_channels[1:]), in_index=(1, 2, 3),
                    channels=width, input_transform="multiple_select", dropout_ratio=0.1,
                    **common)
    if baseline == "fcn":
        return dict(type="FCNHead", in_channels=in_channels[-1], in_index=len(in_channels) - 1,
                    channels=width, num_convs=2, concat_input=False, dropout_ratio=0.1, **common)
    raise ValueError(f"baseline {baseline!r}: use one of {BASELINES}")


def _space(arch: Arch) -> type[SearchSpace]:
    """The space class of ``arch`` (through the space plugins), one whose output kind segmentation exports."""
    from .task import SegmentationTask

    return export_space_class(arch, accepts=SegmentationTask.accepts, task=SegmentationTask.name)


def export_config(path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
                  dataset: str = "proxy", data_root: str = "data/proxy_voc", crop: int = 128,
                  num_classes: int | None = None, classes: list[str] | None = None, width: int = 48,
                  in_channels: list[int] | None = None, iters: int = 2000, lr: float = 3e-3,
                  batch_size: int = 8, val_interval: int | None = None, work_dir: str | None = None,
                  workers: int = 2, seed: int = 0, filter_multiplier: int = 8,
                  backbone: dict[str, Any] | None = None, widths: list[int] | None = None,
                  log: Callable[[str], Any] | None = print, **space_options: Any) -> Path:
    """Write an mmseg config for the found ``arch`` or a ``baseline`` head; returns the path.

    The found arch's space writes its part (``SearchSpace.mm_fragment``, by output kind): a ``dense_map`` arch
    becomes the decode head its space names (an aux-cell arch an ``AuxCellHead``) on the pretrained backbone; a
    ``segmenter`` arch the whole network (Auto-DeepLab: ``AutoDeepLabBackbone`` with ``filter_multiplier`` as
    searched and mmseg's ``ASPPHead`` of ``width`` channels), trained from scratch. ``width``, ``widths``,
    ``filter_multiplier`` and ``space_options`` are the space's export options (``SearchSpace.export_options``).

    The classes are ``classes`` (names), else ``num_classes`` (a count, named by
    :func:`default_class_names`), else the data's own (:func:`data_classes`: the proxy manifest, the labels
    of a VOC-layout set, Cityscapes' 19); they go into the datasets' ``metainfo`` and the head's
    ``num_classes``. ``log`` says what was read from the data (``None``: nothing).

    Raises:
        ValueError: bad arguments, or an arch that does not fit its space.
        FileNotFoundError: no data to take the classes from (names the path).
    """
    if (arch is None) == (baseline is None):
        raise ValueError("give exactly one of arch= or baseline=")
    if dataset not in ("proxy", "voc", "cityscapes"):
        raise ValueError(f"dataset {dataset!r}: use 'proxy', 'voc' or 'cityscapes'")
    if classes is not None:
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes {classes}: need distinct class names")
        if num_classes is not None and int(num_classes) != len(classes):
            raise ValueError(f"num_classes={num_classes} but classes names {len(classes)}: {classes}")
    elif num_classes is not None:
        classes = default_class_names(dataset, int(num_classes), data_root)
    else:  # neither given nor searched with: what the data holds (never a fixed 21 for the user's own set)
        classes = data_classes(dataset, data_root, log)
    num_classes = len(classes)
    backbone = {"type": "mobilenet_v2", **dict(backbone or {}), "pretrained": True}
    from densenas.backbones import backbone_shapes, named_shapes

    # the levels from the backbone's feature info, never hard-coded
    shapes = backbone_shapes(backbone) if in_channels is None else \
        named_shapes([ShapeSpec(int(c), 2 ** (i + 2)) for i, c in enumerate(in_channels)])
    in_channels = [s.channels for s in shapes.values()]
    if baseline == "lraspp" and crop < 49 * 32:
        # mmseg's LRASPPHead hard-codes AvgPool2d(49, stride=(16, 20)) on its last input, which is at
        # stride 32 of the (undilated) MobileNetV2 encoder: smaller images crash mid-training.
        raise ValueError(f"crop {crop}: mmseg's LRASPPHead pools 49x49 windows on the stride-32 "
                         f"features, so it needs crop >= {49 * 32}; use --baseline aspp or fcn")
    imports, lr_mult = ["densenas.tasks.segmentation.mm"], 0.1
    space = _space(arch) if arch is not None else None
    options = dict(width=width, widths=widths, filter_multiplier=filter_multiplier, **space_options)
    if space is not None:
        imports += [m for m in space.mm_imports if m not in imports]
    if space is not None and space.output_kind == "segmenter":  # a whole network, not a head on the backbone
        model = space.mm_fragment(arch, "segmenter", options=options, num_classes=num_classes,
                                  loss_decode=LOSS_DECODE)
        lr_mult = 1.0
    elif baseline in COMPACT:  # a whole compact network of mmseg's, trained from scratch
        common = dict(num_classes=num_classes, norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
                      loss_decode=dict(LOSS_DECODE))
        model = dict(type="EncoderDecoder",
                     data_preprocessor=dict(type="SegDataPreProcessor", mean=MEAN, std=STD, bgr_to_rgb=True,
                                            pad_val=0, seg_pad_val=255, size=None, size_divisor=32),
                     **compact_model(baseline, num_classes, common), train_cfg=dict(), test_cfg=dict(mode="whole"))
        lr_mult = 1.0
    else:
        model = dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=MEAN, std=STD, bgr_to_rgb=True,
                                   pad_val=0, seg_pad_val=255, size=None, size_divisor=32),
            backbone=dict(type="DenseNASBackbone", backbone=backbone),
            decode_head=head_config(arch, baseline, num_classes, list(in_channels), width, widths, in_shapes=shapes,
                                    **{k: v for k, v in options.items() if k not in ("width", "widths")}),
            train_cfg=dict(), test_cfg=dict(mode="whole"))
    cfg = dict(
        densenas_task="segmentation",  # which densenas task plugin tools/test.py asks about this model
        default_scope="mmseg",
        custom_imports=dict(imports=imports, allow_failed_imports=False),
        model=model,
        **data_config(dataset, data_root, crop, classes, batch_size, workers),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr, weight_decay=1e-4),
                           # a pretrained encoder learns 10x slower; a searched network trains from scratch
                           paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=lr_mult)})),
        param_scheduler=[dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False)],
        **runtime_config(iters, val_interval or iters, "mIoU", seed=seed,
                         work_dir=work_dir or f"work_dirs/finetune_{baseline if arch is None else 'found'}",
                         visualizer="SegLocalVisualizer", vis_hook="SegVisualizationHook"))
    bases = [f"datasets/seg_{dataset}.py", "schedules/seg_adamw_poly_2k.py", "seg_runtime.py"]  # ./configs/_base_
    return dump_config(cfg, path, bases=bases, base_root=BASES)
