"""Export a found decoder (or a hand-designed baseline head) as an mmseg 1.2.2 depth-estimation config.

The config is self-contained (no ``_base_``): mmseg's ``DepthEstimator`` with ``DenseNASBackbone`` (the
searched backbone, ImageNet weights) and a depth head of :mod:`.mm` (the found arch's, as its space writes it:
``DepthAuxCellHead`` / ``DepthTemplateHead`` / ``DepthDenseMapHead``; or the ``fcn`` / ``deeplabv3plus``
baselines), trained with mmseg's ``SiLogLoss``
(or ``BerHuLoss`` / ``DepthL1Loss``); data: mmseg's ``NYUDataset`` + ``LoadDepthAnnotation`` (millimetres
to metres) on the proxy depth set or NYU Depth V2, as mmseg's ``configs/_base_/datasets/nyu.py`` reads it;
evaluation: mmseg's ``DepthMetric``. Found and baseline models are written by the same function, so they
fine-tune under exactly the same data pipeline, schedule and budget (Nekrasov et al., CVPR 2019, Sec. 5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from densenas.arch import Arch
from densenas.export import dump_config, fill_defaults, runtime_config
from densenas.space import ShapeSpec

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
BASELINES = ("fcn", "deeplabv3plus")
DATASETS = ("proxy", "nyu")
LOSS_TYPES = {"silog": "SiLogLoss", "berhu": "BerHuLoss", "l1": "DepthL1Loss"}
META_KEYS = ("img_path", "depth_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
             "flip_direction", "category_id")

#: this task's config bases (data per layout, schedule, runtime), composed by every export
BASES = Path(__file__).parent / "configs" / "_base_"


def search_defaults(search_cfg: Mapping[str, Any], arch: Arch | None, task: Any) -> dict[str, Any]:
    """Export options implied by the search of ``arch``: what its space's module needs
    (``SearchSpace.export_options``: width, template widths, ...), backbone, and, for a depth search,
    ``max_depth``, ``loss`` and its proxy set's parameters. A segmentation search's data section is never
    read."""
    out: dict[str, Any] = {"max_depth": task.max_depth, "loss": task.loss_kind}
    if arch is not None:
        from densenas.tasks.dense import space_export_options

        space_export_options(out, arch, search_cfg, task)
    if search_cfg.get("backbone") and "backbone" not in out:
        out["backbone"] = dict(search_cfg["backbone"])
    task_cfg = dict(search_cfg.get("task") or {})
    if task_cfg.get("type") == "depth":
        out.update({k: task_cfg[k] for k in ("max_depth", "loss") if k in task_cfg})
        data = dict(search_cfg.get("data") or {})
        if data.get("layout", "proxy") == "proxy" and data.get("proxy"):
            out["proxy"] = dict(data["proxy"])
    return out


def data_config(dataset: str, root: str, crop: int, max_depth: float, batch_size: int = 8,
                workers: int = 2) -> dict[str, Any]:
    """Dataloaders and evaluators for the proxy set or NYU Depth V2 (mmseg's ``NYUDataset``)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: use one of {DATASETS}")
    root = str(root)  # kept as given: a relative root (the shipped configs') is read from the working dir
    pack = dict(type="PackSegInputs", meta_keys=META_KEYS)
    train_pipeline = [
        dict(type="LoadImageFromFile"), dict(type="LoadDepthAnnotation", depth_rescale_factor=1e-3),
        dict(type="RandomDepthMix", prob=0.25), dict(type="RandomFlip", prob=0.5),
        dict(type="RandomCrop", crop_size=(crop, crop)), dict(type="PhotoMetricDistortion"), pack]
    test_pipeline = [dict(type="LoadImageFromFile")]
    if dataset == "nyu":  # mmseg's NYU test resize; the label stays at full size (loaded after the resize)
        test_pipeline.append(dict(type="Resize", scale=(2000, crop), keep_ratio=True))
    test_pipeline += [dict(type="LoadDepthAnnotation", depth_rescale_factor=1e-3), pack]
    base = dict(type="NYUDataset", data_root=root)
    train_ds = dict(base, data_prefix=dict(img_path="images/train", depth_map_path="annotations/train"),
                    pipeline=train_pipeline)
    val_ds = dict(base, test_mode=True, data_prefix=dict(img_path="images/test", depth_map_path="annotations/test"),
                  pipeline=test_pipeline)
    loader = dict(num_workers=workers, persistent_workers=workers > 0)
    # the NYU border crop of mmseg's configs only fits full-size 480x640 NYU labels
    evaluator = dict(type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=float(max_depth),
                     crop_type="nyu_crop" if dataset == "nyu" else None)
    return dict(
        train_dataloader=dict(batch_size=batch_size, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=train_ds, **loader),
        val_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False), dataset=val_ds,
                            **loader),
        test_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False), dataset=val_ds,
                             **loader),
        val_evaluator=evaluator, test_evaluator=dict(evaluator))


def head_config(arch: Arch | None, baseline: str | None, in_channels: list[int], width: int, max_depth: float,
                loss: str, widths: list[int] | None = None, *, in_shapes: Mapping[str, ShapeSpec] | None = None,
                space_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The depth head: the found decoder as its space writes it (``mm_fragment(arch, "depth_head")``:
    ``DepthAuxCellHead``, ``DepthTemplateHead``, ``DepthDenseMapHead``) or a baseline, all with ``loss_decode`` of
    ``loss``. ``in_shapes``: the backbone's levels (default ``in_channels`` at strides 4, 8, ...);
    ``space_options``: the further export options of the arch's space."""
    if loss not in LOSS_TYPES:
        raise ValueError(f"loss {loss!r}: use one of {sorted(LOSS_TYPES)}")
    common = dict(num_classes=1, max_depth=float(max_depth), norm_cfg=dict(type="BN", requires_grad=True),
                  align_corners=False, loss_decode=dict(type=LOSS_TYPES[loss]))
    last = len(in_channels) - 1
    if arch is not None:
        from densenas.backbones import named_shapes
        from densenas.space import export_space_class

        from .task import DepthTask

        space = export_space_class(arch, accepts=DepthTask.accepts, task=DepthTask.name)
        shapes = in_shapes or named_shapes([ShapeSpec(int(c), 2 ** (i + 2)) for i, c in enumerate(in_channels)])
        options = {**dict(space_options or {}), "width": width, "widths": widths}
        return space.mm_fragment(arch, "depth_head", options=options, in_shapes=shapes, **common)
    if baseline == "fcn":
        return dict(type="DepthFCNHead", in_channels=in_channels[last], in_index=last, channels=width, num_convs=2,
                    concat_input=False, dropout_ratio=0.1, **common)
    if baseline == "deeplabv3plus":  # ASPP on stride 32 + the stride-4 features, like the found decoders
        return dict(type="DepthSepASPPHead", in_channels=in_channels[last], in_index=last, channels=width,
                    dilations=(1, 6, 12, 18), c1_in_channels=in_channels[0], c1_channels=max(width // 4, 8),
                    dropout_ratio=0.1, **common)
    raise ValueError(f"baseline {baseline!r}: use one of {BASELINES}")


def _space_imports(arch: Arch | None) -> list[str]:
    """The modules the arch's space registers its adapter in (``SearchSpace.mm_imports``), besides this task's."""
    if arch is None:
        return []
    from densenas.space import export_space_class

    return [m for m in export_space_class(arch).mm_imports if m != "densenas.tasks.depth.mm"]


def export_depth_config(path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
                        **options: Any) -> Path:
    """Write an mmseg depth config for the found ``arch`` or a ``baseline`` head; returns the path.

    Options (defaults in brackets): ``dataset`` (proxy), ``data_root`` (data/proxy_nyu; the proxy set is
    built there when it has no manifest), ``crop`` (96 proxy, 480 NYU), ``width`` (48), ``backbone``
    (mobilenet_v2), ``widths`` (template archs) and the other export options of the arch's space
    (``SearchSpace.export_options``), ``max_depth`` (10), ``loss`` (silog), ``iters`` (2000), ``lr`` (3e-3),
    ``batch_size`` (8), ``val_interval`` (``iters``), ``workers`` (2), ``work_dir``, ``seed`` (0), ``proxy``
    (proxy-set parameters).
    """
    if (arch is None) == (baseline is None):
        raise ValueError("give exactly one of arch= or baseline=")
    dataset = options.get("dataset") or "proxy"
    fill_defaults(options, data_root="data/proxy_nyu", crop=480 if dataset == "nyu" else 96, width=48,
                  max_depth=10.0, loss="silog", iters=2000, lr=3e-3, batch_size=8, workers=2, seed=0)
    if dataset == "proxy":
        from densenas.datasets.depth_proxy import DEPTH_MANIFEST_NAME, build_proxy_nyu

        if not (Path(options["data_root"]) / DEPTH_MANIFEST_NAME).is_file():  # never rebuild a user's set
            build_proxy_nyu(options["data_root"], **dict(options.get("proxy") or {}))
    backbone = {"type": "mobilenet_v2", **dict(options.get("backbone") or {}), "pretrained": True}
    from densenas.backbones import backbone_shapes

    shapes = backbone_shapes(backbone)  # from its feature info
    in_channels = [s.channels for s in shapes.values()]
    iters = int(options["iters"])
    model = dict(
        type="DepthEstimator",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=MEAN, std=STD, bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=0,  # padded label pixels are invalid depth
                               size_divisor=32, test_cfg=dict(size_divisor=32)),
        backbone=dict(type="DenseNASBackbone", backbone=backbone),
        decode_head=head_config(arch, baseline, in_channels, int(options["width"]), float(options["max_depth"]),
                                options["loss"], options.get("widths"), in_shapes=shapes, space_options=options),
        train_cfg=dict(), test_cfg=dict(mode="whole"))
    cfg = dict(
        densenas_task="depth",  # which densenas task plugin tools/test.py asks about this model
        default_scope="mmseg",
        custom_imports=dict(imports=["densenas.tasks.depth.mm", *_space_imports(arch)],
                            allow_failed_imports=False),
        model=model,
        **data_config(dataset, options["data_root"], int(options["crop"]), float(options["max_depth"]),
                      int(options["batch_size"]), int(options["workers"])),
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=dict(type="AdamW", lr=float(options["lr"]), weight_decay=1e-4),
                           # the pretrained encoder learns 10x slower than the new head
                           paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)})),
        param_scheduler=[dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False)],
        **runtime_config(iters, int(options.get("val_interval") or iters), "rmse", rule="less",
                         seed=int(options["seed"]),
                         work_dir=options.get("work_dir") or f"work_dirs/depth_{baseline or 'found'}",
                         visualizer="SegLocalVisualizer"))
    bases = [f"datasets/depth_{dataset}.py", "schedules/depth_adamw_poly_2k.py", "depth_runtime.py"]  # ./configs/_base_
    return dump_config(cfg, path, bases=bases, base_root=BASES)
