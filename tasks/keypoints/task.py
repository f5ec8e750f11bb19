"""The 2-D keypoint (human pose) task plugin: decoders of the segmentation spaces transferred to top-down
heatmap regression and searched on it, after the keypoint experiments of Nekrasov et al., "Fast Neural
Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells" (CVPR 2019), inside mmpose
1.x (Xiao et al.'s SimpleBaseline heatmaps, ECCV 2018).

Data: the proxy keypoint set (COCO layout), COCO keypoints or MPII, cut into top-down crops with heatmap
targets of an mmpose codec (``data.codec``: ``msra``, ``dark`` (Zhang et al., CVPR 2020) or ``udp`` (Huang et
al., CVPR 2020); :mod:`.data`); candidate: a decoder with ``K`` output channels, mmpose's
``KeypointMSELoss`` with target weights (+ auxiliary heads) (:mod:`.candidate`); metrics: PCKh@0.5 / @0.1
and COCO keypoint AP / AR of the codec's decoding, flip-tested as mmpose does (``task.flip_test``)
(:mod:`.metrics`); reward: the mean of PCKh@0.5 and PCKh@0.1; export: an mmpose ``TopdownPoseEstimator``
config with the same codec and flip test (:mod:`.export`, registrations in :mod:`.mm`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.export import fill_defaults
from densenas.space import SearchSpace, ShapeSpec
from densenas.task import Task

from .candidate import FlipTest, KptTargets, build_kpt_candidate
from .data import DATA_DEFAULT_CODEC, KptData, build_codec, build_data, flip_shift
from .metrics import keypoint_reward

DEFAULT_FLIP_TEST = True
"""The default of ``task.flip_test``: the better PCKh@0.1 of the search's candidates with the default codec
(UDP: 0.0180 flip-tested vs 0.0132 without, over the 10 trainings of :data:`.data.DEFAULT_CODEC`), and
mmpose's own test setting."""


class KeypointTask(Task):
    """Top-down 2-D keypoint estimation (the data section sets crops, heatmaps and the codec).

    Args:
        flip_test: validate on each crop and its mirror image, averaging the heatmaps (mmpose's
            ``test_cfg=dict(flip_test=True, flip_mode='heatmap')``); the export writes the same ``test_cfg``.
        shift_heatmap: the flip test's one-cell shift of the flipped-back heatmaps; ``None``: the codec's
            (:func:`.data.flip_shift`: on for ``msra`` / ``dark``, off for ``udp``, as mmpose's configs).

    Raises:
        TypeError: a ``flip_test`` / ``shift_heatmap`` that is not a bool (names it).
    """

    name = "keypoints"
    accepts = ("dense_map",)
    deploy_output = "heatmaps"
    spaces = ("auxcell",)
    report_metrics = (("pckh05", "PCKh@0.5"), ("pckh01", "PCKh@0.1"), ("ap", "AP"), ("ar", "AR"))
    reward_label = "reward (mean of PCKh@0.5 and PCKh@0.1)"
    default_scope = "mmpose"
    baselines = ("heatmap",)
    baselines_note = "mmpose's SimpleBaseline HeatmapHead, --width deconv channels (default 256)"
    export_help = {
        "dataset": "proxy (default), coco or mpii (--layout says the same)",
        "layout": "the same as --dataset", "data_root": "default: the search's data root, else data/proxy_kpt",
        "crop": "crop height, width 3/4 of it (default 128)", "sigma": "heatmap Gaussian sigma (default 2)",
        "width": "found head width (default 48) / the baseline's deconvolution channels (default 256)",
        "iters": "default 2000", "lr": "default 1e-3", "batch_size": "default 16"}
    test_metric = (r"^pckh$|pckh@0\.5", True)  # tools/test.py's headline metric (tools/fidelity.py --final-iters)

    def __init__(self, flip_test: bool = DEFAULT_FLIP_TEST, shift_heatmap: bool | None = None) -> None:
        if not isinstance(flip_test, bool):
            raise TypeError(f"task.flip_test must be True or False, got {flip_test!r}")
        if shift_heatmap is not None and not isinstance(shift_heatmap, bool):
            raise TypeError(f"task.shift_heatmap must be True, False or None (the codec's), got {shift_heatmap!r}")
        self.flip_test, self.shift_heatmap = flip_test, shift_heatmap
        self.data: KptData | None = None
        self.targets: KptTargets | None = None
        self.codec: Any = None
        self._val_images: Tensor | None = None

    # ------------------------------------------------------------------ data
    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        self.data = build_data(dict(data_cfg), source=source, log=log)
        self.codec = build_codec(self.data.input_size, self.data.sigma, self.data.codec)
        self.targets = KptTargets(self.data, self.codec, self.flip_test)
        self._val_images = None

    def _data(self) -> KptData:
        if self.data is None:
            raise RuntimeError("call build_data() first")
        return self.data

    def space_defaults(self) -> dict[str, Any]:
        """``K`` output channels; ``task`` tells the aux-cell space to offer the ``heatmap`` baseline."""
        return {"num_classes": self._data().num_keypoints, "task": self.name}

    def flip(self) -> FlipTest | None:
        """The flip test of the search (``None`` when off)."""
        if not self.flip_test:
            return None
        shift = flip_shift(self._data().codec) if self.shift_heatmap is None else self.shift_heatmap
        return FlipTest(list(self._data().flip_indices), shift)

    # ------------------------------------------------- candidate searches
    def images(self, split: str) -> Tensor:
        """The crops; under the flip test ``"val"`` holds the ``N`` crops followed by their mirror images."""
        if split == "train":
            return self._data().train.images
        if not self.flip_test:
            return self._data().val.images
        if self._val_images is None:
            x = self._data().val.images
            self._val_images = torch.cat([x, x.flip(-1)])
        return self._val_images

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        return build_kpt_candidate(space, arch, shapes, self.codec, self._data().input_size, self.flip())

    def reward(self, metrics: Mapping[str, float]) -> float:
        return keypoint_reward(dict(metrics))

    # ------------------------------------------------------------ test time
    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        """Backbone + head up to the heatmaps (no decoding); the found head's aux heads excluded."""
        from densenas.tasks.dense import inference_cost

        return inference_cost(model, "head")

    def deploy_note(self, cfg: Any) -> str:
        codec = cfg.model.get("head", {}).get("decoder", {}) if hasattr(cfg, "model") else {}
        kind = codec.get("type", "the config's codec") if isinstance(codec, dict) else "the config's codec"
        return (f"heatmaps: (N, keypoints, H/4, W/4) on the person crop; decoding to keypoints ({kind}, "
                "mmpose's codec.decode), the flip test and the crop-to-image transform are outside the graph")

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        """The crop size of the test pipeline's ``TopdownAffine`` (``input_size`` is ``(w, h)``)."""
        for step in cfg.test_dataloader.dataset.pipeline:
            if step.get("type") == "TopdownAffine":
                w, h = step["input_size"]
                return int(h), int(w)
        return super().test_size(cfg, runner)

    # ------------------------------------------------------------ export
    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmpose config (:func:`.export.keypoint_config`). Backbone and the options the arch's space needs
        (``SearchSpace.export_options``: width, template widths, ...) are the searched ones (``search_cfg``,
        which may be a segmentation search: its data section is never used); data (crop,
        sigma, codec) comes from ``options`` (default: the proxy keypoint set) or a keypoint search's ``data``
        section, the flip test from ``options`` or its ``task`` section: the exported model decodes and
        flip-tests as the search scored it."""
        from .export import keypoint_config

        search_cfg = dict(search_cfg or {})
        task_type = dict(search_cfg.get("task") or {}).get("type")
        data = dict(search_cfg.get("data") or {}) if task_type == self.name else {}
        if options.get("dataset") is None and options.get("layout") is not None:
            options["dataset"] = options.pop("layout")
        options.pop("layout", None)
        fill_defaults(options, dataset=data.get("layout", "proxy"), data_root=data.get("root", "data/proxy_kpt"),
                      lr=1e-3, iters=2000, batch_size=16)
        if data.get("input_size") is not None and options.get("input_size") is None:
            options["input_size"] = tuple(data["input_size"])
        if data.get("sigma") is not None and options.get("sigma") is None:
            options["sigma"] = float(data["sigma"])
        # the codec and flip test the candidates were scored with (a keypoint search), else the defaults
        if task_type == self.name and options.get("codec") is None:
            options["codec"] = data.get("codec", DATA_DEFAULT_CODEC)
        task_opts = dict(search_cfg.get("task") or {}) if task_type == self.name else {}
        for key in ("flip_test", "shift_heatmap"):
            if task_opts.get(key) is not None and options.get(key) is None:
                options[key] = task_opts[key]
        if arch is not None:  # the export options the arch's space needs (width, widths, its section, ...)
            from densenas.tasks.dense import space_export_options

            space_export_options(options, arch, search_cfg, self)
        if search_cfg.get("backbone") and options.get("backbone") is None:
            options["backbone"] = dict(search_cfg["backbone"])
        return keypoint_config(path, arch=arch, baseline=baseline, **options)
