"""The semantic-segmentation task plugin (Nekrasov et al., "Fast Neural Architecture Search of Compact
Semantic Segmentation Models via Auxiliary Cells", CVPR 2019; Auto-DeepLab, Liu et al., CVPR 2019).

Data: the proxy set, VOC or Cityscapes (:mod:`.data`); loss: pixel-wise cross entropy (+ auxiliary heads,
+ distillation from a teacher trained once per search, :mod:`.teacher`); metrics: mIoU, frequency-weighted
IoU and pixel accuracy from one confusion matrix; reward: their geometric mean (:mod:`.losses`);
candidates: :mod:`.candidate`; export: an mmseg config (:mod:`.export`, registrations in :mod:`.mm`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.config import ConfigError, check_keys
from densenas.export import fill_defaults
from densenas.space import SearchSpace, ShapeSpec
from densenas.task import Task

from .candidate import SegTargets, build_seg_candidate
from .data import SegData, build_data
from .losses import REWARDS, seg_loss, seg_reward

TEACHER_KEYS = {"iters", "batch_size", "lr", "width"}


class SegmentationTask(Task):
    """Semantic segmentation.

    Args:
        teacher: ``dict(iters, batch_size, lr, width)`` of the distillation teacher (an ASPP head on the
            encoder, fine-tuned end to end once per search); ``None``: no distillation.
        kd_temperature: softening temperature of the distillation loss.
    """

    name = "segmentation"
    accepts = ("dense_map", "segmenter")
    deploy_output = "seg_logits"
    spaces = ("auxcell", "autodeeplab", "template")
    report_metrics = (("miou", "mIoU"), ("fwiou", "fwIoU"), ("pixel_acc", "pix.acc"))
    reward_label = "reward (geo. mean of mIoU, fwIoU, pixel acc.)"
    default_scope = "mmseg"
    baselines = ("aspp", "deeplabv3plus", "lraspp", "fcn", "cgnet", "fastscnn", "erfnet")
    baselines_note = ("aspp, deeplabv3plus, lraspp (crop >= 1568), fcn: heads on the backbone, --width channels; "
                      "cgnet, fastscnn, erfnet: compact whole networks trained from scratch")
    export_help = {
        "dataset": "proxy (default), voc or cityscapes, in their real layouts",
        "data_root": "default: the search's data root, else data/proxy_voc",
        "classes": "a count or comma-separated names (default: the search's, else the data's own)",
        "crop": "training crop in pixels (default 128)", "width": "decoder channels (default: as searched)",
        "iters": "default 2000", "lr": "default 3e-3", "batch_size": "default 8"}
    test_metric = (r"(^|/)miou$", True)  # tools/test.py's headline metric (tools/fidelity.py --final-iters)
    export_default = spaces + baselines  # depth and keypoints take these too, as transfers (with --task)

    def __init__(self, teacher: Mapping[str, Any] | None = None, kd_temperature: float = 1.0,
                 reward: str = "geomean"):
        if reward not in REWARDS:
            raise ValueError(f"task.reward={reward!r}: use one of {list(REWARDS)}")
        self.reward_kind = reward
        if reward != "geomean":
            self.reward_label = f"reward ({dict(self.report_metrics)[reward]})"
        if teacher is not None:
            check_keys("task.teacher", dict(teacher), lambda **kw: None, extra=TEACHER_KEYS)
        self.teacher_cfg = None if teacher is None else dict(teacher)
        self.kd_temperature = float(kd_temperature)
        self.data: SegData | None = None
        self.targets: SegTargets | None = None

    # ------------------------------------------------------------------ data
    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        self.data = build_data(dict(data_cfg), source=source, log=log)
        self.targets = SegTargets(self.data.train[1], self.data.val[1], self.data.num_classes)

    def _data(self) -> SegData:
        if self.data is None:
            raise RuntimeError("call build_data() first")
        return self.data

    def space_defaults(self) -> dict[str, Any]:
        return {"num_classes": self._data().num_classes}

    # ------------------------------------------------- candidate searches
    def prepare(self, encoder: nn.Module, shapes: Mapping[str, ShapeSpec], *, device: Any,
                work_dir: Path | None, seed: int, log: Callable[[str], None]) -> None:
        """Train (or load) the distillation teacher and cache its logits on the training images."""
        if self.teacher_cfg is None:
            return
        from .teacher import train_teacher

        data, t0 = self._data(), time.perf_counter()
        path = None if work_dir is None else Path(work_dir) / "cache" / "teacher.pth"
        teacher = train_teacher(encoder, list(shapes.values()), *data.train, data.num_classes, seed=seed,
                                device=device, path=path, log=log, **self.teacher_cfg)
        with torch.no_grad():
            self.targets.teacher_logits = torch.cat(
                [teacher(data.train[0][i:i + 16].to(device)).cpu() for i in range(0, len(data.train[0]), 16)])
        log(f"teacher ready ({time.perf_counter() - t0:.1f}s)")

    def images(self, split: str) -> Tensor:
        return self._data().train[0] if split == "train" else self._data().val[0]

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        return build_seg_candidate(space, arch, shapes, kd_temperature=self.kd_temperature)

    def reward(self, metrics: Mapping[str, float]) -> float:
        return seg_reward(dict(metrics), self.reward_kind)

    # ------------------------------------------------- supernet searches
    def supernet_data(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        return self._data().train, self._data().val

    def supernet_loss(self, output: Any, target: Tensor) -> Tensor:
        return seg_loss(output, target)

    def supernet_score(self, batch_size: int):
        from .supernet import seg_score_fn

        return seg_score_fn(self._data().num_classes, batch_size)

    # ------------------------------------------------------------ test time
    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        from densenas.tasks.dense import inference_cost

        return inference_cost(model, "decode_head")

    def deploy_note(self, cfg: Any) -> str:
        return ("seg_logits: (N, classes, H/s, W/s) class scores at the decoder's output stride s; resize to the "
                "image (bilinear) and argmax over classes outside the graph, as mmseg's postprocess_result does")

    # ------------------------------------------------------------ export
    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmseg config (see :func:`.export.export_config`); the classes and the backbone are the ones
        the arch was searched with (``search_cfg``) unless ``options`` set them (``classes``: names, or a
        count as ``tools/export.py --classes N`` gives); the arch's space gives the options its module
        needs (``SearchSpace.export_options``: width, template widths, ...). A search's class count or proxy
        manifest holds only for the root it read (its ``data.classes`` names always); otherwise, and for a
        baseline, the classes are the exported data's own (:func:`.export.data_classes`)."""
        from .export import export_config

        search_cfg = dict(search_cfg or {})
        data = dict(search_cfg.get("data") or {})
        # the data the arch was searched on, unless the user names other data (dataset or root)
        if options.get("data_root") is None and options.get("dataset") is None and data.get("root"):
            options["data_root"] = str(data["root"])
            if data.get("layout") in ("voc", "cityscapes"):
                options["dataset"] = data["layout"]
        fill_defaults(options, data_root="data/proxy_voc", crop=128, lr=3e-3, iters=2000)
        if isinstance(options.get("classes"), int):  # tools/export.py --classes N: a count
            options["num_classes"] = options.pop("classes")
        if options.get("classes") is None and options.get("num_classes") is None and \
                options.get("dataset", "proxy") != "proxy" and data and \
                (data.get("classes") or _same_root(data, options["data_root"])):
            options["classes"] = searched_classes(data)
        # classes still unset: export_config takes them from the data itself (never a fixed 21 on a VOC layout,
        # nor the proxy's classes for the real set an arch found on the proxy is fine-tuned on)
        if arch is not None:  # the export options the arch's space needs (width, widths, ...), as searched
            from densenas.tasks.dense import space_export_options

            space_export_options(options, arch, search_cfg, self)
        if options.get("width") is None:
            options["width"] = 128
        if search_cfg.get("backbone") and options.get("backbone") is None:
            options["backbone"] = dict(search_cfg["backbone"])
        return export_config(path, arch=arch, baseline=baseline, **options)


def _same_root(data_cfg: Mapping[str, Any], data_root: str | Path) -> bool:
    """Whether an export to ``data_root`` reads the data a search's ``data`` section read (a section naming no
    root is taken to): only then do the search's class count or proxy manifest describe the exported data."""
    root = data_cfg.get("root")
    return root is None or Path(root).resolve() == Path(data_root).resolve()


def searched_classes(data_cfg: Mapping[str, Any]) -> list[str] | None:
    """Class names of a search's ``data`` section: the proxy manifest's, ``data.classes``, or the first
    ``data.num_classes`` names of the layout's classes (VOC / Cityscapes)."""
    from densenas.datasets.segfolder import CITYSCAPES_CLASSES, VOC_CLASSES

    if data_cfg.get("classes"):
        return list(data_cfg["classes"])
    layout = data_cfg.get("layout", "proxy")
    if layout == "proxy":
        manifest = Path(data_cfg.get("root", "data/proxy_voc")) / "densenas_proxy.json"
        return list(json.loads(manifest.read_text())["classes"]) if manifest.is_file() else None
    k = data_cfg.get("num_classes")
    names = list(CITYSCAPES_CLASSES if layout == "cityscapes" else VOC_CLASSES)
    if k is None:
        return None
    if int(k) > len(names):
        raise ConfigError(f"data.num_classes={k} but layout {layout!r} names {len(names)} classes; "
                          f"set data.classes")
    return names[:int(k)]
