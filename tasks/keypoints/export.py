"""Export a found decoder (or the SimpleBaseline heatmap head) as a self-contained mmpose 1.x config.

The model is mmpose's ``TopdownPoseEstimator`` on a pretrained ``DenseNASBackbone`` (every level of the
searched backbone, default MobileNetV2) with either the found decoder as its space writes the heatmap head
(``SearchSpace.mm_fragment``: ``AuxCellHeatmapHead``, Nekrasov et al., CVPR 2019, transferred to keypoints as in
their Sec. 5; a template network in the same head) or the baseline ``heatmap``: mmpose's
``HeatmapHead`` (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018: three
4x4 stride-2 deconvolutions and a 1x1 conv) on the backbone's last level. Both share the data pipeline
(mmpose's top-down ``GetBBoxCenterScale`` / ``TopdownAffine`` / ``GenerateTarget`` with the search's codec at
stride 4: ``MSRAHeatmap``, DARK's ``MSRAHeatmap(unbiased=True)`` (Zhang et al., CVPR 2020) or ``UDPHeatmap``
with ``TopdownAffine(use_udp=True)`` (Huang et al., CVPR 2020); :mod:`.data`), the flip test
(``test_cfg=dict(flip_test=..., flip_mode='heatmap', shift_heatmap=...)``, as the search's), the schedule and
the evaluators:

* ``proxy`` (default; the proxy keypoint set, COCO layout with head sizes): ``CocoHeadSizeDataset``,
  ``CocoMetric`` (AP, AR) and ``PCKAccuracy(norm_item='head')`` at 0.5 and 0.1 (PCKh);
* ``coco``: ``CocoDataset``, ``CocoMetric`` and ``PCKAccuracy(norm_item='bbox')``;
* ``mpii``: ``MpiiDataset`` (head boxes from ``annotations/mpii_gt_val.mat``), ``MpiiPCKAccuracy``
  (PCKh@0.5 and PCKh@0.1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from densenas.arch import Arch
from densenas.export import dump_config, runtime_config

from .data import DATA_DEFAULT_CODEC, DEFAULT_CODEC, check_codec, codec_cfg, flip_shift, uses_udp

BASELINES = ("heatmap",)
DATASETS = ("proxy", "coco", "mpii")
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
NUM_KEYPOINTS = {"coco": 17, "mpii": 16}

#: this task's config bases (data per layout, schedule, runtime), composed by every export
BASES = Path(__file__).parent / "configs" / "_base_"
#: iterations in which an exported keypoint head trains alone before the whole model does (HeadFirstHook), as
#: in the measured head-first runs (docs/depth_keypoints.md, "Head first, then the whole model")
HEAD_FIRST_ITERS = 20


def _num_keypoints(dataset: str, root: Path) -> int:
    """``K`` of the data: the proxy manifest's keypoints (building the set first when it is missing)."""
    if dataset != "proxy":
        return NUM_KEYPOINTS[dataset]
    from densenas.datasets.kpt_proxy import MANIFEST_NAME, build_proxy_kpt

    manifest = root / MANIFEST_NAME
    data = json.loads(manifest.read_text()) if manifest.is_file() else build_proxy_kpt(root)
    return len(data["keypoints"])


def data_config(dataset: str, root: str | Path, input_size: tuple[int, int], sigma: float, batch_size: int,
                workers: int, codec_name: str = DATA_DEFAULT_CODEC) -> dict[str, Any]:
    """Dataloaders and evaluators of ``dataset`` in its real layout (``input_size = (w, h)``), targets of
    ``codec_name`` (UDP's crops for ``udp``)."""
    root = Path(root)  # as given: a relative root keeps a shipped config valid on any checkout
    codec = codec_cfg(input_size, sigma, codec_name)
    affine = dict(type="TopdownAffine", input_size=codec["input_size"],
                  **({"use_udp": True} if uses_udp(codec_name) else {}))
    train_pipeline = [dict(type="LoadImage"), dict(type="GetBBoxCenterScale"),
                      dict(type="RandomFlip", direction="horizontal"),
                      *([dict(type="RandomHalfBody")] if dataset == "coco" else []),
                      dict(type="RandomBBoxTransform", **({"shift_prob": 0} if dataset == "mpii" else {})),
                      affine, dict(type="GenerateTarget", encoder=codec), dict(type="PackPoseInputs")]
    val_pipeline = [dict(type="LoadImage"), dict(type="GetBBoxCenterScale"), affine, dict(type="PackPoseInputs")]
    if dataset == "mpii":
        base = dict(type="MpiiDataset", data_root=str(root), data_mode="topdown", data_prefix=dict(img="images/"))
        train = dict(base, ann_file="annotations/mpii_train.json")
        val = dict(base, ann_file="annotations/mpii_val.json", test_mode=True,
                   headbox_file=str(root / "annotations" / "mpii_gt_val.mat"))
        evaluator: Any = dict(type="MpiiPCKAccuracy")
    elif dataset in ("proxy", "coco"):
        base = dict(type="CocoHeadSizeDataset" if dataset == "proxy" else "CocoDataset", data_root=str(root),
                    data_mode="topdown")
        if dataset == "proxy":
            base["metainfo"] = dict(from_file=str(root / "metainfo.py"))
        train = dict(base, ann_file="annotations/person_keypoints_train2017.json", data_prefix=dict(img="train2017/"))
        val = dict(base, ann_file="annotations/person_keypoints_val2017.json", data_prefix=dict(img="val2017/"),
                   test_mode=True)
        coco = dict(type="CocoMetric", ann_file=str(root / "annotations" / "person_keypoints_val2017.json"))
        norm = "head" if dataset == "proxy" else "bbox"
        evaluator = [coco] + [dict(type="PCKAccuracy", thr=thr, norm_item=norm, prefix=f"pck{norm[0]}@{thr}")
                              for thr in (0.5, 0.1)]
    else:
        raise ValueError(f"dataset {dataset!r}: use one of {list(DATASETS)}")
    loader = dict(num_workers=workers, persistent_workers=workers > 0)
    val_loader = dict(batch_size=16, drop_last=False, sampler=dict(type="DefaultSampler", shuffle=False,
                                                                   round_up=False),
                      dataset=dict(val, pipeline=val_pipeline), **loader)
    return dict(
        train_dataloader=dict(batch_size=batch_size, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dict(train, pipeline=train_pipeline), **loader),
        val_dataloader=val_loader, test_dataloader=val_loader, val_evaluator=evaluator, test_evaluator=evaluator)


def head_config(arch: Arch | None, baseline: str | None, num_keypoints: int, in_channels: list[int],
                strides: list[int], codec: dict[str, Any], width: int,
                space: Mapping[str, Any] | None = None, **space_options: Any) -> dict[str, Any]:
    """The found decoder as its space writes it (``mm_fragment(arch, "heatmap_head")``: an
    ``AuxCellHeatmapHead``, which hosts an arch of another ``dense_map`` space rebuilt from its search ``space``
    section) or the baseline ``HeatmapHead`` (SimpleBaseline). ``width``, ``space`` and ``space_options``: the
    export options of the arch's space (``SearchSpace.export_options``)."""
    loss = dict(type="KeypointMSELoss", use_target_weight=True)
    if arch is not None:
        from densenas.backbones import named_shapes
        from densenas.space import ShapeSpec, export_space_class

        from .task import KeypointTask

        cls = export_space_class(arch, space, accepts=KeypointTask.accepts, task=KeypointTask.name)
        shapes = named_shapes([ShapeSpec(int(c), int(s)) for c, s in zip(in_channels, strides, strict=True)])
        options = {**space_options, "width": width, "space": space}
        return cls.mm_fragment(arch, "heatmap_head", options=options, in_shapes=shapes, out_channels=num_keypoints,
                               heatmap_size=codec["heatmap_size"], loss=loss, decoder=codec)
    if baseline == "heatmap":
        return dict(type="HeatmapHead", in_channels=in_channels[-1], out_channels=num_keypoints,
                    deconv_out_channels=(width,) * 3, deconv_kernel_sizes=(4, 4, 4), loss=loss, decoder=codec)
    raise ValueError(f"baseline {baseline!r}: use one of {list(BASELINES)}")


def _space_imports(arch: Arch | None, space: Mapping[str, Any] | None) -> list[str]:
    """The modules the arch's space registers its adapter in (``SearchSpace.mm_imports``), besides this task's."""
    if arch is None:
        return []
    from densenas.space import export_space_class

    return [m for m in export_space_class(arch, space).mm_imports if m != "densenas.tasks.keypoints.mm"]


def keypoint_config(path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
                    dataset: str = "proxy", data_root: str = "data/proxy_kpt", crop: int | None = None,
                    input_size: tuple[int, int] | None = None, sigma: float | None = None, width: int | None = None,
                    iters: int = 2000, lr: float = 1e-3, batch_size: int = 16, val_interval: int | None = None,
                    workers: int = 2, work_dir: str | None = None, seed: int = 0,
                    backbone: Mapping[str, Any] | None = None, codec: str | None = None,
                    flip_test: bool | None = None, shift_heatmap: bool | None = None,
                    space: Mapping[str, Any] | None = None, **space_options: Any) -> Path:
    """Write an mmpose config for the found ``arch`` of any ``dense_map`` space (as its space writes the head,
    ``SearchSpace.mm_fragment``) or ``baseline="heatmap"``.

    Args:
        path: the config file to write.
        dataset: ``proxy``, ``coco`` or ``mpii``; data_root: its root (the proxy set is built if missing).
        crop: crop height (width 3/4 of it), overriding ``input_size``; input_size: ``(h, w)``, default
            ``(128, 96)``; multiples of 4 (of 32 for the baseline).
        sigma: heatmap Gaussian sigma (default 2).
        width: decoder width of the found head (default 48) / deconvolution channels of the baseline
            (default 256, mmpose's SimpleBaseline).
        iters, lr, batch_size, val_interval, workers, work_dir, seed: schedule and runtime.
        backbone: a :mod:`densenas.backbones` config (default MobileNetV2, every level).
        codec: ``msra``, ``dark`` or ``udp`` (default :data:`.data.DEFAULT_CODEC`, UDP): targets, decoding,
            crops.
        flip_test: flip-test at validation (default :data:`.task.DEFAULT_FLIP_TEST`); shift_heatmap: its
            one-cell shift (default the codec's, :func:`.data.flip_shift`).
        space: the search's ``space`` section (a space rebuilt from it, e.g. a template network, reads it;
            without it the space reads its settings off the arch).
        **space_options: further export options of the arch's space (``SearchSpace.export_options``, e.g.
            a template network's ``widths``).

    Raises:
        ValueError: neither or both of ``arch`` / ``baseline``, an unknown dataset, baseline or codec, a crop
            that is of the wrong multiple, an arch of a space the task does not export; InvalidArch: an arch
            that is not in its space (names the field).
    """
    if (arch is None) == (baseline is None):
        raise ValueError("give exactly one of arch= or baseline=")
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: use one of {list(DATASETS)}")
    h, w = (int(crop), int(crop) * 3 // 4) if crop is not None else tuple(input_size or (128, 96))
    if baseline is not None and (h % 32 or w % 32):
        # the baseline's three deconvolutions from stride 32 must land exactly on the heatmap size
        raise ValueError(f"input size {h}x{w} (h x w): the heatmap baseline needs multiples of 32")
    if h % 4 or w % 4:  # the heatmaps are at stride 4
        raise ValueError(f"input size {h}x{w} (h x w): both sides must be multiples of 4")
    from .task import DEFAULT_FLIP_TEST

    codec_name = check_codec(DEFAULT_CODEC if codec is None else codec, "codec")
    codec = codec_cfg((w, h), 2.0 if sigma is None else float(sigma), codec_name)
    flip = DEFAULT_FLIP_TEST if flip_test is None else bool(flip_test)
    shift = flip_shift(codec_name) if shift_heatmap is None else bool(shift_heatmap)
    k = _num_keypoints(dataset, Path(data_root))
    bb = {"type": "mobilenet_v2", **dict(backbone or {}), "pretrained": True}
    from densenas.backbones import backbone_shapes

    shapes = list(backbone_shapes(bb).values())
    width = int(width if width is not None else (48 if arch is not None else 256))
    head = head_config(arch, baseline, k, [s.channels for s in shapes], [s.stride for s in shapes], codec, width,
                       space, **space_options)
    model = dict(type="TopdownPoseEstimator",
                 data_preprocessor=dict(type="PoseDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True),
                 # the backbone's BatchNorm statistics stay the pretrained ones, as in the proxy's end-to-end
                 # stage (docs/depth_keypoints.md: PCKh@0.5 0.772 -> 0.802 for the found head, 0.822 -> 0.871
                 # for HeatmapHead at 256 x 192, 300 iterations, one seed)
                 backbone=dict(type="DenseNASBackbone", backbone=bb, norm_eval=True), head=head,
                 test_cfg=dict(flip_test=flip, flip_mode="heatmap", shift_heatmap=shift))
    best = "coco/AP" if dataset != "mpii" else "PCK"
    cfg = dict(
        densenas_task="keypoints",  # which densenas task plugin tools/test.py asks about this model
        default_scope="mmpose",
        custom_imports=dict(imports=["densenas.tasks.keypoints.mm", *_space_imports(arch, space)],
                            allow_failed_imports=False),
        model=model,
        **data_config(dataset, data_root, (w, h), codec["sigma"], batch_size, workers, codec_name),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr, weight_decay=1e-4),
                           # the pretrained encoder learns 10x slower than the new head
                           paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)})),
        param_scheduler=[dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False)],
        # the new head learns alone first, the backbone fixed, as the search's proxy trained it
        # (densenas.mm_hooks.HeadFirstHook; found and baseline heads alike)
        # decay_lr + restart="all": as two separate runs (head alone, then all from its checkpoint), which
        # the plain hook trailed at 300 iterations (PCKh@0.5 of #2: 0.906 / 0.905 vs 0.856 / 0.814, 2 seeds)
        custom_hooks=[dict(type="HeadFirstHook", iters=min(HEAD_FIRST_ITERS, iters), decay_lr=True, restart="all")],
        **runtime_config(iters, val_interval or iters, best, rule="greater", seed=seed,
                         work_dir=work_dir or f"work_dirs/finetune_kpt_{baseline or 'found'}"))
    bases = [f"datasets/kpt_{dataset}.py", "schedules/kpt_adamw_poly_2k.py", "kpt_runtime.py"]  # ./configs/_base_
    return dump_config(cfg, path, bases=bases, base_root=BASES)
