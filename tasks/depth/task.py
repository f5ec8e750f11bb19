"""The monocular depth-estimation task plugin: the decoders of Nekrasov et al. ("Fast Neural Architecture
Search of Compact Semantic Segmentation Models via Auxiliary Cells", CVPR 2019, Sec. 5: transfer to NYUv2
depth) searched or transferred inside mmseg 1.2.2's own depth machinery.

Data: the proxy depth set or NYU Depth V2 in mmseg's layout (:mod:`.data`); candidates: a segmentation
space's decoder with one output channel, ``max_depth * sigmoid(out)`` (:mod:`.candidate`); loss: mmseg's
``SiLogLoss`` (berHu, L1 as options) also on the auxiliary heads; metrics: mmseg's ``DepthMetric``;
reward: ``sqrt(d1 / (1 + rmse))`` (:mod:`.losses`); export: an mmseg ``DepthEstimator`` config
(:mod:`.export`, heads registered in :mod:`.mm`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from densenas.arch import Arch
from densenas.space import SearchSpace, ShapeSpec
from densenas.task import Task

from .candidate import DepthTargets, build_depth_candidate
from .data import DepthData, build_depth_data
from .losses import LOSSES, depth_reward


class DepthTask(Task):
    """Monocular depth estimation.

    Args:
        max_depth: range of the predicted depth (``max_depth * sigmoid``) and upper bound of the evaluated
            ground truth, in metres (NYU: 10).
        min_depth: lower bound of the evaluated ground truth (mmseg's NYU configs: 1e-3 m).
        loss: ``silog`` (mmseg's ``SiLogLoss``), ``berhu`` or ``l1``.
    """

    name = "depth"
    accepts = ("dense_map",)
    deploy_output = "depth"
    spaces = ("auxcell", "template")
    report_metrics = (("d1", "δ1"), ("rmse", "RMSE"), ("rmse_log", "RMSE log"), ("abs_rel", "abs rel"))
    reward_label = "reward sqrt(δ1 / (1 + RMSE[m]))"
    # Exported configs are mmseg's, but they name this task (densenas_task="depth"): claiming the "mmseg"
    # scope here would make segmentation configs that lack densenas_task ambiguous (densenas.task.task_of_config).
    default_scope = ""
    baselines = ("fcn", "deeplabv3plus")
    baselines_note = "mmseg heads regressing depth, --width channels"
    export_help = {
        "dataset": "proxy (default) or nyu", "data_root": "default: the search's data root, else data/proxy_nyu",
        "crop": "training crop (default 96 on the proxy set, 480 on NYU)",
        "width": "decoder channels (default: as searched, else 48)", "iters": "default 2000",
        "lr": "default 3e-3", "batch_size": "default 8"}
    test_metric = (r"(^|/)rmse$", False)  # tools/test.py's headline metric (tools/fidelity.py --final-iters)

    def __init__(self, max_depth: float = 10.0, min_depth: float = 1e-3, loss: str = "silog"):
        if loss not in LOSSES:
            raise ValueError(f"task.loss is {loss!r}; use one of {list(LOSSES)}")
        if not 0 <= float(min_depth) < float(max_depth):
            raise ValueError(f"need 0 <= task.min_depth < task.max_depth, got {min_depth}, {max_depth}")
        self.max_depth, self.min_depth, self.loss_kind = float(max_depth), float(min_depth), loss
        self.data: DepthData | None = None
        self.targets: DepthTargets | None = None

    # ------------------------------------------------------------------ data
    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        self.data = build_depth_data(dict(data_cfg), source=source, log=log)
        self.targets = DepthTargets(self.data.train[1], self.data.val[1], self.min_depth, self.max_depth)

    def _data(self) -> DepthData:
        if self.data is None:
            raise RuntimeError("call build_data() first")
        return self.data

    def space_defaults(self) -> dict[str, Any]:
        return {"num_classes": 1}  # one output channel: the depth logit

    # ------------------------------------------------- candidate searches
    def images(self, split: str) -> Tensor:
        return self._data().train[0] if split == "train" else self._data().val[0]

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        return build_depth_candidate(space, arch, shapes, max_depth=self.max_depth, loss=self.loss_kind)

    def reward(self, metrics: Mapping[str, float]) -> float:
        return depth_reward(metrics)

    # ------------------------------------------------------------ test time
    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        from densenas.tasks.dense import inference_cost

        return inference_cost(model, "decode_head")

    def deploy_note(self, cfg: Any) -> str:
        return ("depth: (N, 1, H/s, W/s) metric depth at the decoder's output stride s; resize to the image "
                "(bilinear) outside the graph, as mmseg's DepthEstimator does")

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        """The size of the first test image after the test pipeline (NYU images are not square)."""
        return tuple(int(s) for s in runner.test_dataloader.dataset[0]["inputs"].shape[-2:])

    # ------------------------------------------------------------ export
    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmseg ``DepthEstimator`` config (see :func:`.export.export_depth_config`).

        Width, backbone (and template widths) come from the search config of ``arch`` — a segmentation
        search's too, whose data section is never used; ``max_depth`` / ``loss`` from its task section
        when it was a depth search. The proxy set is built at ``data_root`` when missing.
        """
        from densenas.export import fill_defaults

        from .export import export_depth_config, search_defaults

        fill_defaults(options, **search_defaults(dict(search_cfg or {}), arch, self))
        return export_depth_config(path, arch=arch, baseline=baseline, **options)
