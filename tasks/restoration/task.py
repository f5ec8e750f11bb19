"""The image-restoration task plugin (IR-NAS, Zhang et al., "Memory-Efficient Hierarchical Neural
Architecture Search for Image Restoration"): denoising (Gaussian noise) and deraining, searched one-shot.

Data: the proxy set, BSD500-style folders or Rain100-style pairs (:mod:`.data`); loss: L1 + λ·(-log SSIM),
metrics: PSNR and SSIM, reward: one of them (:mod:`.functional`); export: an mmengine config of the
IR-NAS net or a DnCNN baseline (:mod:`.export`, modules registered in :mod:`.mm`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from densenas.arch import Arch
from densenas.export import fill_defaults
from densenas.task import Task

from .data import restoration_data
from .functional import RestorationSpec, restoration_score_fn


class RestorationTask(Task):
    """Image restoration.

    Args:
        kind: ``"denoise"`` or ``"derain"``.
        sigma: Gaussian noise level on the 0..255 scale (denoising).
        lam: weight of the log-SSIM term of the loss.
        reward_metric: ``"psnr"`` or ``"ssim"``.
    """

    name = "restoration"
    accepts = ("restorer",)
    deploy_output = "restored"
    spaces = ("irnas",)
    report_metrics = (("psnr", "PSNR"), ("ssim", "SSIM"))
    reward_label = "reward (val PSNR of the supernet)"
    default_scope = ""
    baselines = ("dncnn",)
    baselines_with_arch = ("dncnn",)
    baselines_note = "dncnn: 17 layers; with an IR-NAS arch, at least its parameter count"
    export_help = {
        "layout": "bsd (default) or rain100", "kind": "denoise or derain (default: as searched)",
        "sigma": "denoising noise level on the 0..255 scale (default: as searched)",
        "data_root": "default data/proxy_restore", "crop": "training crop (default 48)",
        "width": "IR-NAS base width (default: as searched)", "iters": "default 2000", "lr": "default 1e-3",
        "batch_size": "default 16"}
    test_metric = (r"psnr", True)  # tools/test.py's headline metric (tools/fidelity.py --final-iters)

    def __init__(self, kind: str = "denoise", sigma: float = 30.0, lam: float = 0.1, reward_metric: str = "psnr"):
        self.spec = RestorationSpec(kind=kind, sigma=sigma, lam=lam, reward_metric=reward_metric)
        self.reward_label = f"reward (val {reward_metric.upper()} of the supernet)"
        self.train: tuple[Tensor, Tensor] | None = None
        self.val: tuple[Tensor, Tensor] | None = None

    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        self.train, self.val = restoration_data(dict(data_cfg), self.spec, source=source, log=log)

    def reward(self, metrics: Mapping[str, float]) -> float:
        return self.spec.reward(dict(metrics))

    def supernet_data(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        if self.train is None:
            raise RuntimeError("call build_data() first")
        return self.train, self.val

    def supernet_loss(self, output: Any, target: Tensor) -> Tensor:
        return self.spec.loss(output, target)

    def supernet_score(self, batch_size: int):
        return restoration_score_fn(self.spec.reward_metric, batch_size)

    def test_cost_model(self, model: Any, cfg: Any) -> tuple[Any, int, int, str]:
        from densenas.costs import count_params
        from densenas.task import TensorForward

        return (TensorForward(model, lambda m, x: m(x, mode="tensor")), count_params(model.net),
                int(cfg.model.net.get("in_channels", 3)), "")

    def deploy_note(self, cfg: Any) -> str:
        return "restored: (N, C, H, W) image on the input's scale; clip to its range outside the graph"

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        crop = cfg.test_dataloader.dataset.get("crop")
        if crop:
            return (int(crop), int(crop))
        return tuple(runner.test_dataloader.dataset[0]["inputs"].shape[-2:])

    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmengine config of the IR-NAS net of ``arch`` (widths as searched) or of DnCNN with at least
        its parameters (see :func:`.export.restoration_config`)."""
        from .export import restoration_config

        search_cfg = dict(search_cfg or {})
        task = dict(search_cfg.get("task") or {})
        kind = options.pop("kind", None) or task.get("kind", self.spec.kind)
        fill_defaults(options, data_root="data/proxy_restore", crop=48, lr=1e-3, iters=2000,
                  layout="rain100" if kind == "derain" else "bsd", space=search_cfg.get("space") or None,
                  sigma=task.get("sigma", self.spec.sigma))
        options["task"] = kind
        return restoration_config(path, arch=arch, baseline=baseline, **options)
