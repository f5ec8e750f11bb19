"""mmengine hooks that exported configs use while an OpenMMLab runner fine-tunes a found model or a baseline.

``HeadFirstHook``: the first ``iters`` iterations train the new head alone, the pretrained backbone fixed
(its weights and its BatchNorm statistics), then everything trains. This is the proxy trainer's two-stage
order (Nekrasov et al., CVPR 2019: the decoder on cached encoder features first, then end to end) and the
"linear probe, then fine-tune" order of Kumar et al. (ICLR 2022), which keeps a randomly initialised head
from sending large gradients into the pretrained features. Measured on the 256 x 192 keypoint proxy
(docs/depth_keypoints.md, "Head first, then the whole model"): at 1,000 iterations with this hook and the
backbone's BatchNorm frozen, the found head #2 reached PCKh@0.5 / PCKh@0.1 0.902 / 0.458 against 0.858 / 0.353
as exported before (one seed). At 300 iterations the hook still trails the same idea done as two separate
runs (0.856 / 0.814 against 0.913 / 0.898 PCKh@0.5, seeds 0 / 1): there the head-only run decays its lr to 0
and the second run restarts every optimiser state. With ``decay_lr=True, restart="all"`` (what exported
keypoint configs now write) the hook reaches 0.906 / 0.905, the two runs' level; at 1,000 iterations with
light augmentation it takes #2 to 0.911 / 0.562 PCKh@0.5 / PCKh@0.1 and 0.799 AP against mmpose's HeatmapHead
at 0.917 / 0.403 / 0.757 (mean of 2 seeds).

Written here rather than with an mmengine ``paramwise_cfg`` (``lr_mult=0`` for the backbone) because that
holds for the whole run; a parameter scheduler cannot switch one group on later without rewriting every
scheduler of the config. The backbone's weights are restored after each optimiser step of the head-only
phase (the gradients still flow, so distributed data parallel sees every parameter used) and its optimiser
state is cleared at the switch, so the backbone starts the joint phase with fresh AdamW moments, as a
second run started from the first one's checkpoint would.

Configs register it with ``custom_imports=dict(imports=["densenas.mm_hooks"])`` and
``custom_hooks=[dict(type="HeadFirstHook", iters=20, decay_lr=True, restart="all")]``.
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

__all__ = ["HeadFirstHook"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside an mmengine / torch data-parallel wrapper."""
    return getattr(model, "module", model)


@HOOKS.register_module()
class HeadFirstHook(Hook):
    """Train the head alone for the first ``iters`` iterations, the backbone fixed, then the whole model.

    Args:
        iters: iterations of the head-only phase (0: the hook does nothing).
        module: attribute of the model holding the pretrained part (default ``"backbone"``).
        decay_lr: scale every learning rate by ``(1 - i / iters) ** 0.9`` at head-only iteration ``i`` (a
            poly decay to 0 within the phase, as a separate head-only run with its own ``PolyLR`` would);
            the config's schedule is untouched (the rates are restored before its scheduler steps).
        restart: ``"backbone"`` (default) clears the backbone's optimiser state at the switch; ``"all"``
            clears every parameter's, as a second run started from the first one's checkpoint would.
    """

    priority = "NORMAL"  # after the optimiser step, before the scheduler (LOW) and checkpointing (VERY_LOW)

    def __init__(self, iters: int = 20, module: str = "backbone", decay_lr: bool = False,
                 restart: str = "backbone"):
        if isinstance(iters, bool) or int(iters) < 0:
            raise ValueError(f"HeadFirstHook: iters must be a non-negative integer, got {iters!r}")
        if restart not in ("backbone", "all"):
            raise ValueError(f"HeadFirstHook: restart must be 'backbone' or 'all', got {restart!r}")
        self.iters, self.module = int(iters), str(module)
        self.decay_lr, self.restart = bool(decay_lr), restart
        self._saved: list[torch.Tensor] | None = None
        self._lrs: list[Any] | None = None

    def _backbone(self, runner: Any) -> nn.Module:
        model = _unwrap(runner.model)
        part = getattr(model, self.module, None)
        if not isinstance(part, nn.Module):
            raise ValueError(f"HeadFirstHook: the model ({type(model).__name__}) has no module "
                             f"{self.module!r} to hold fixed")
        return part

    def before_train(self, runner: Any) -> None:
        self._saved = None
        if runner.iter < self.iters:  # a resumed run past the head-only phase needs nothing
            backbone = self._backbone(runner)
            self._saved = [p.detach().clone() for p in backbone.parameters()]
            runner.logger.info(f"HeadFirstHook: the head trains alone for iterations {runner.iter + 1}-"
                               f"{self.iters} ({self.module} weights and BatchNorm statistics fixed), then "
                               f"the whole model")

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self._saved is None:
            return
        backbone = self._backbone(runner)
        if runner.iter < self.iters:
            for m in backbone.modules():  # the runner puts the model in train mode after each validation
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            if self.decay_lr:
                groups = runner.optim_wrapper.optimizer.param_groups
                self._lrs = [g["lr"] for g in groups]
                scale = (1.0 - runner.iter / self.iters) ** 0.9
                for g in groups:
                    g["lr"] = g["lr"] * scale
        else:
            self._switch(runner, backbone)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        # runner.iter is the finished iteration's index here (the loop increments it after the hooks)
        if self._saved is None or runner.iter >= self.iters:
            return
        if self._lrs is not None:  # the config's rates back before its scheduler steps
            for g, lr in zip(runner.optim_wrapper.optimizer.param_groups, self._lrs):
                g["lr"] = lr
            self._lrs = None
        with torch.no_grad():
            for p, saved in zip(self._backbone(runner).parameters(), self._saved):
                p.copy_(saved)

    def _switch(self, runner: Any, backbone: nn.Module) -> None:
        """The end of the head-only phase: fresh optimiser state for the backbone, its own train mode back."""
        params = {id(p) for p in backbone.parameters()}
        optimizer = runner.optim_wrapper.optimizer
        for p in list(optimizer.state):
            if self.restart == "all" or id(p) in params:
                del optimizer.state[p]
        backbone.train(True)  # applies the backbone's own norm_eval setting
        self._saved = None
        runner.logger.info(f"HeadFirstHook: iteration {runner.iter + 1}: the whole model trains from here")
