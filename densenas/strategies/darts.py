"""First-order DARTS: alternate weight and architecture steps on two splits of the training data.

After Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search" (ICLR 2019), first-order variant
(the architecture gradient ignores the one-step look-ahead of the weights), as used by Auto-DeepLab (Liu
et al., CVPR 2019: SGD with momentum and a cosine schedule for the weights on split A, Adam for α/β on
split B, architecture updates only after some weights-only warm-up epochs).

:class:`DartsTrainer` drives any :class:`~densenas.supernet.Supernet` through its protocol only
(``forward``, ``arch_parameters()``, ``weight_parameters()``) plus a loss ``loss_fn(output, target)``, so
the segmentation lattice (Auto-DeepLab) and the restoration supernet (IR-NAS) train with the same code.
Its ``state_dict`` holds everything a resumed run needs to reproduce an uninterrupted one bit for bit:
supernet weights and α/β (and buffers), both optimisers, the epoch counter and the RNG states.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..supernet import Supernet

Split = tuple[Tensor, Tensor]
LossFn = Callable[[Any, Tensor], Tensor]


@dataclass
class DartsCfg:
    """Hyper-parameters of :class:`DartsTrainer` (defaults: DARTS / Auto-DeepLab).

    Attributes:
        w_lr: initial SGD learning rate of the weights.
        w_lr_min: final learning rate of the cosine schedule.
        w_momentum: SGD momentum.
        w_weight_decay: SGD weight decay.
        arch_lr: Adam learning rate of α/β.
        arch_betas: Adam betas of α/β.
        arch_weight_decay: Adam weight decay of α/β.
        batch_size: images per step (both splits).
        steps_per_epoch: weight (and arch) steps per epoch; ``None``: one pass over split A.
        warmup_epochs: first epochs with weight steps only (Auto-DeepLab starts α/β after 20 of 40).
        grad_clip: max global norm of the weight gradients (``None``: no clipping).
        total_epochs: length of the cosine schedule; ``None`` keeps ``w_lr`` constant.
    """

    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    batch_size: int = 8
    steps_per_epoch: int | None = None
    warmup_epochs: int = 0
    grad_clip: float | None = 5.0
    total_epochs: int | None = None


class DartsTrainer:
    """Alternating first-order DARTS optimisation of a supernet.

    Args:
        supernet: the supernet (its parameters' device is used for the batches).
        loss_fn: ``loss_fn(supernet(inputs), targets) -> scalar``.
        cfg: hyper-parameters.
        seed: seed of the trainer's own batch-sampling generator.

    Attributes:
        epoch: finished epochs.
    """

    def __init__(self, supernet: Supernet, loss_fn: LossFn, cfg: DartsCfg | None = None, seed: int = 0):
        self.supernet = supernet
        self.loss_fn = loss_fn
        self.cfg = cfg = cfg or DartsCfg()
        if cfg.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
        arch = list(supernet.arch_parameters())
        weights = list(supernet.weight_parameters())
        if not arch or not weights:
            raise ValueError(f"{type(supernet).__name__}: needs both architecture ({len(arch)}) and weight "
                             f"({len(weights)}) parameters")
        self.arch_params, self.weight_params = arch, [p for p in weights if p.requires_grad]
        self.w_opt = torch.optim.SGD(self.weight_params, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.arch_params, lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                      weight_decay=cfg.arch_weight_decay)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        return self.arch_params[0].device

    def lr(self, epoch: int | None = None) -> float:
        """Weight learning rate of ``epoch`` (default the next one): cosine from ``w_lr`` to ``w_lr_min``."""
        e = self.epoch if epoch is None else epoch
        c = self.cfg
        if not c.total_epochs:
            return c.w_lr
        t = min(e / c.total_epochs, 1.0)
        return c.w_lr_min + 0.5 * (c.w_lr - c.w_lr_min) * (1.0 + math.cos(math.pi * t))

    def _batches(self, split: Split, steps: int) -> list[Tensor]:
        n = len(split[0])
        if n == 0:
            raise ValueError("DARTS: empty data split")
        bs = min(self.cfg.batch_size, n)
        order: list[Tensor] = []
        total = 0
        while total < steps * bs:
            order.append(torch.randperm(n, generator=self.generator))
            total += n
        flat = torch.cat(order)
        return [flat[k * bs:(k + 1) * bs] for k in range(steps)]

    def _loss(self, split: Split, idx: Tensor, phase: str, step: int) -> Tensor:
        x, y = split[0][idx].to(self.device), split[1][idx].to(self.device)
        loss = self.loss_fn(self.supernet(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"DARTS {phase} loss is {loss.item()} at epoch {self.epoch + 1} step {step + 1} "
                f"(w_lr={self.lr():g}, arch_lr={self.cfg.arch_lr:g}); lower the learning rates or set "
                f"grad_clip")
        return loss

    def train_epoch(self, split_a: Split, split_b: Split,
                    generator: torch.Generator | None = None) -> dict[str, float]:
        """One epoch: per step a weight step on a batch of ``split_a`` then (after the warm-up) an α/β
        step on a batch of ``split_b``.

        Args:
            split_a: ``(inputs, targets)`` for the weights.
            split_b: ``(inputs, targets)`` for the architecture parameters.
            generator: batch-sampling generator; default the trainer's own (saved in ``state_dict``).

        Returns:
            ``w_loss`` / ``a_loss`` (means over the epoch; ``a_loss`` is NaN during the warm-up), ``lr``.

        Raises:
            FloatingPointError: a non-finite loss (names the phase, epoch and step).
        """
        gen_saved = self.generator
        if generator is not None:
            self.generator = generator
        try:
            return self._train_epoch(split_a, split_b)
        finally:
            self.generator = gen_saved

    def _train_epoch(self, split_a: Split, split_b: Split) -> dict[str, float]:
        c = self.cfg
        steps = c.steps_per_epoch or max(len(split_a[0]) // min(c.batch_size, len(split_a[0])), 1)
        lr = self.lr()
        for g in self.w_opt.param_groups:
            g["lr"] = lr
        search = self.epoch >= c.warmup_epochs
        idx_a = self._batches(split_a, steps)
        idx_b = self._batches(split_b, steps) if search else []
        self.supernet.train()
        w_sum, a_sum = 0.0, 0.0
        for s in range(steps):
            self.w_opt.zero_grad(set_to_none=True)
            loss = self._loss(split_a, idx_a[s], "weight", s)
            loss.backward(inputs=self.weight_params)
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.weight_params, c.grad_clip)
            self.w_opt.step()
            w_sum += float(loss.detach())
            if search:
                self.a_opt.zero_grad(set_to_none=True)
                loss = self._loss(split_b, idx_b[s], "architecture", s)
                loss.backward(inputs=self.arch_params)
                self.a_opt.step()
                a_sum += float(loss.detach())
        self.epoch += 1
        return {"w_loss": w_sum / steps, "a_loss": a_sum / steps if search else float("nan"), "lr": lr}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Supernet (weights, α/β, buffers), optimisers, epoch, cfg and RNG states (ours and torch's)."""
        state = {"supernet": self.supernet.state_dict(), "w_opt": self.w_opt.state_dict(),
                 "a_opt": self.a_opt.state_dict(), "epoch": self.epoch, "cfg": asdict(self.cfg),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also restores torch's global RNG, for stochastic supernets)."""
        self.supernet.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
