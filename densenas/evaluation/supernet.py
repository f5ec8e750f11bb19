"""The evaluator of one-shot searches: train a supernet with first-order DARTS and score it, for any task.

After Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search" (ICLR 2019), first-order variant
(the architecture gradient ignores the one-step look-ahead of the weights), as used by Auto-DeepLab (Liu
et al., CVPR 2019: SGD with momentum and a cosine schedule for the weights on split A, Adam for α/β on
split B, architecture updates only after some weights-only warm-up epochs) and IR-NAS (Zhang et al.).

:class:`SupernetTrainer` drives any :class:`~densenas.differentiable.Supernet` through its protocol only
(``forward``, ``arch_parameters()``, ``weight_parameters()``) plus two callables the task supplies:
``loss_fn(output, target)`` and ``score_fn(supernet, split) -> (reward, metrics)``; it imports no task.
Its ``state_dict`` holds everything a resumed run needs to reproduce an uninterrupted one bit for bit
(supernet weights and α/β and buffers, both optimisers, the epoch counter, the RNG states as tensors, the
config as a plain dict) and loads with ``torch.load(weights_only=True)``.

Data-parallel (several processes in a ``torch.distributed`` group, :mod:`densenas.distributed`): every rank
starts from rank 0's supernet, draws the same global batches (rank 0's indices, broadcast), trains on its
contiguous shard of each, and the shard-weighted gradients of the weights *and* of α/β are summed over the
ranks before each optimiser step (DDP on the weights alone would leave the architecture step per-rank), so
``N`` processes at batch ``B`` take the steps of one process at batch ``B`` up to summation order.
BatchNorm layers are made synchronous (:class:`~densenas.sync_bn.SyncBatchNorm2d`, CPU and CUDA), so
their training statistics are the global batch's too. The step equals one process's exactly when the loss is
a mean over samples (MSE, cross-entropy); a loss with a batch-level non-linearity (IR-NAS's
``log10(1 / mean SSIM)`` term) becomes the share-weighted mean of the shards' losses. Every rank scores the
whole validation split (same weights, same reward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .. import distributed as dist
from ..sync_bn import sync_batchnorm
from ..arch import Arch
from ..strategies.darts import DartsCfg
from ..differentiable import DifferentiableSpace, Supernet

Split = tuple[Tensor, Tensor]
LossFn = Callable[[Any, Tensor], Tensor]
ScoreFn = Callable[[Supernet, Split], tuple[float, dict[str, float]]]
CostFn = Callable[[Arch], dict[str, float]]


@dataclass
class Splits:
    """Data of a one-shot search: ``weights`` (split A), ``arch`` (split B) and ``val``."""

    weights: Split
    arch: Split
    val: Split


def split_halves(train: Split, seed: int = 0) -> tuple[Split, Split]:
    """Two disjoint random halves of a training set (Auto-DeepLab's trainA / trainB)."""
    n = len(train[0])
    if n < 2:
        raise ValueError(f"need at least 2 training samples to split, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    a, b = perm[: n // 2], perm[n // 2:]
    return (train[0][a], train[1][a]), (train[0][b], train[1][b])


class SupernetTrainer:
    """Alternating first-order DARTS optimisation and scoring of a supernet.

    Args:
        supernet: the supernet (its parameters' device is used for the batches).
        loss_fn: ``loss_fn(supernet(inputs), targets) -> scalar``.
        cfg: hyper-parameters (:class:`DartsCfg` or its fields).
        score_fn: ``score_fn(supernet, split) -> (reward, metrics)`` (:meth:`score`).
        splits: default data of :meth:`train_epoch` and :meth:`score`.
        cost_fn: ``cost_fn(arch) -> {"params": ...}`` (:meth:`cost`; empty without).
        seed: seed of the trainer's own batch-sampling generator.

    Attributes:
        epoch: finished epochs.
    """

    def __init__(self, supernet: Supernet, loss_fn: LossFn, cfg: DartsCfg | Mapping[str, Any] | None = None,
                 *, score_fn: ScoreFn | None = None, splits: Splits | None = None,
                 cost_fn: CostFn | None = None, seed: int = 0):
        self.supernet = supernet
        self.loss_fn, self.score_fn, self.cost_fn, self.splits = loss_fn, score_fn, cost_fn, splits
        self.cfg = cfg = cfg if isinstance(cfg, DartsCfg) else DartsCfg(**dict(cfg or {}))
        if cfg.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
        self.distributed = dist.is_distributed()
        if self.distributed:  # before the parameters are collected; the parameter objects are kept anyway
            sync_batchnorm(supernet)
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
        if self.distributed:
            if cfg.batch_size < dist.world_size():
                raise ValueError(f"DARTS batch_size={cfg.batch_size} is smaller than the {dist.world_size()} "
                                 f"processes; raise strategy.batch_size to at least {dist.world_size()}")
        # every rank starts from rank 0's weights and α/β: broadcast before the first step, not here, so that
        # building the trainer (e.g. inside rank 0's part of distributed.main_first) is no collective
        self._synced = not self.distributed

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
        flat = torch.cat(order).to(split[0].device)  # one copy per epoch, not one per step
        return [flat[k * bs:(k + 1) * bs] for k in range(steps)]

    def _check(self, loss: float, phase: str, step: int) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"DARTS {phase} loss is {loss} at epoch {self.epoch + 1} step {step + 1} "
                f"(w_lr={self.lr():g}, arch_lr={self.cfg.arch_lr:g}); lower the learning rates or set "
                f"grad_clip")

    def _backward(self, split: Split, idx: Tensor, params: list[Tensor], phase: str, step: int) -> float:
        """Gradients of ``params`` for the mean loss of the batch ``idx``; returns that loss.

        Data-parallel: the loss of this rank's shard, weighted by its share, then summed over the ranks
        (gradients and loss in one all-reduce) before the finiteness check, so every rank raises or none.
        """
        weight = 1.0
        if self.distributed:
            idx, weight = dist.shard(idx)
        x, y = split[0][idx].to(self.device), split[1][idx].to(self.device)
        loss = self.loss_fn(self.supernet(x), y)
        if not self.distributed:
            self._check(float(loss.detach()), phase, step)  # before backward, as before
            loss.backward(inputs=params)
            return float(loss.detach())
        # the share-weighted loss, not its gradients afterwards: synchronous BatchNorm sums the gradients of
        # its global statistics over the ranks in backward, and they must be weighted alike
        (loss * weight).backward(inputs=params)
        (total,) = dist.all_reduce_grads(params, extra=[float(loss.detach()) * weight])
        self._check(total, phase, step)
        return total

    def _splits(self) -> Splits:
        if self.splits is None:
            raise ValueError("SupernetTrainer: no data; pass splits= to the constructor or the splits to call")
        return self.splits

    def train_epoch(self, split_a: Split | None = None, split_b: Split | None = None,
                    generator: torch.Generator | None = None) -> dict[str, float]:
        """One epoch: per step a weight step on a batch of ``split_a`` then (after the warm-up) an α/β
        step on a batch of ``split_b``.

        Args:
            split_a: ``(inputs, targets)`` for the weights (default ``splits.weights``).
            split_b: ``(inputs, targets)`` for the architecture parameters (default ``splits.arch``).
            generator: batch-sampling generator; default the trainer's own (saved in ``state_dict``).

        Returns:
            ``w_loss`` / ``a_loss`` (means over the epoch; ``a_loss`` is NaN during the warm-up), ``lr``.

        Raises:
            FloatingPointError: a non-finite loss (names the phase, epoch and step).
        """
        split_a = self._splits().weights if split_a is None else split_a
        split_b = self._splits().arch if split_b is None else split_b
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
        if not self._synced:
            dist.broadcast_module(self.supernet)
            self._synced = True
        if self.distributed:  # the same global batches on every rank: rank 0's
            idx_a = list(dist.broadcast_tensor(torch.stack(idx_a)))
            idx_b = list(dist.broadcast_tensor(torch.stack(idx_b))) if idx_b else []
        self.supernet.train()
        w_sum, a_sum = 0.0, 0.0
        for s in range(steps):
            self.w_opt.zero_grad(set_to_none=True)
            w_sum += self._backward(split_a, idx_a[s], self.weight_params, "weight", s)
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.weight_params, c.grad_clip)
            self.w_opt.step()
            if search:
                self.a_opt.zero_grad(set_to_none=True)
                a_sum += self._backward(split_b, idx_b[s], self.arch_params, "architecture", s)
                self.a_opt.step()
        self.epoch += 1
        return {"w_loss": w_sum / steps, "a_loss": a_sum / steps if search else float("nan"), "lr": lr}

    def score(self, split: Split | None = None) -> tuple[float, dict[str, float]]:
        """``score_fn(supernet, split)`` (default split: ``splits.val``)."""
        if self.score_fn is None:
            raise ValueError("SupernetTrainer: no score_fn given")
        return self.score_fn(self.supernet, self._splits().val if split is None else split)

    def cost(self, arch: Arch) -> dict[str, float]:
        """``cost_fn(arch)`` (empty without one)."""
        return dict(self.cost_fn(arch)) if self.cost_fn is not None else {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Supernet (weights, α/β, buffers), optimisers, epoch, cfg and RNG states (ours and torch's)."""
        state = {"supernet": self.supernet.state_dict(), "w_opt": self.w_opt.state_dict(),
                 "a_opt": self.a_opt.state_dict(), "epoch": self.epoch, "cfg": self.cfg.to_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also torch's global RNG, for stochastic supernets).

        The optimisers' hyper-parameters are then set from this trainer's ``cfg``, so a run resumed with
        lowered learning rates (after a divergence) uses them.
        """
        self.supernet.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        c = self.cfg
        for g in self.w_opt.param_groups:
            g.update(momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        for g in self.a_opt.param_groups:
            g.update(lr=c.arch_lr, betas=tuple(c.arch_betas), weight_decay=c.arch_weight_decay)
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _on_device(split: Split, device: torch.device) -> Split:
    """``(inputs, targets)`` on ``device`` (tensors; anything else as it is)."""
    return tuple(t.to(device) if isinstance(t, Tensor) else t for t in split)  # type: ignore[return-value]


def build_supernet_trainer(space: DifferentiableSpace, train: Split, val: Split, loss_fn: LossFn,
                           score_fn: ScoreFn, *, epochs: int, cfg: DartsCfg | Mapping[str, Any] | None = None,
                           seed: int = 0, device: str | torch.device = "cpu") -> SupernetTrainer:
    """The evaluator of a whole one-shot search, whatever the task.

    Splits ``train`` into two disjoint halves (weights / architecture), builds the supernet under
    ``torch.manual_seed(seed)`` on ``device``, moves the data there once (batches are then gathered on the
    device, and the score function reads the val split where the supernet is) and builds the trainer
    (cosine schedule over ``epochs`` unless ``cfg`` sets ``total_epochs``), with the derived arch's
    parameter count as cost.

    Args:
        space: a differentiable space (``AutoDeepLabSpace``, ``IRNASSpace``).
        train: ``(inputs, targets)`` training tensors.
        val: ``(inputs, targets)`` validation tensors (scored after every epoch).
        loss_fn: ``loss_fn(output, target)`` the supernet is trained with.
        score_fn: ``score_fn(supernet, val) -> (reward, metrics)``.
        epochs: the search's epochs (default length of the cosine schedule).
        cfg: :class:`DartsCfg` or its fields (e.g. ``Darts.cfg``).
        seed: seed of the split, the supernet initialisation and the batch order.
        device: where the supernet trains.
    """
    cfg = cfg if isinstance(cfg, DartsCfg) else DartsCfg(**dict(cfg or {}))
    if cfg.total_epochs is None:
        cfg = DartsCfg(**{**cfg.__dict__, "total_epochs": int(epochs)})
    dev = torch.device(device)
    train, val = _on_device(train, dev), _on_device(val, dev)
    split_a, split_b = split_halves(train, seed)
    torch.manual_seed(seed)
    supernet = space.build_supernet().to(device)

    def cost(arch: Arch) -> dict[str, float]:
        return {"params": float(sum(p.numel() for p in space.build(arch).parameters()))}

    return SupernetTrainer(supernet, loss_fn, cfg, score_fn=score_fn, splits=Splits(split_a, split_b, val),
                           cost_fn=cost, seed=seed)


def trainer_for_task(task: Any, space: DifferentiableSpace, *, epochs: int,
                     cfg: DartsCfg | Mapping[str, Any] | None = None, seed: int = 0,
                     device: str | torch.device = "cpu") -> SupernetTrainer:
    """:func:`build_supernet_trainer` from a task plugin's one-shot hooks (used duck-typed, no import):
    ``task.supernet_data() -> (train, val)``, ``task.supernet_loss(output, target)`` and
    ``task.supernet_score(batch_size) -> score_fn`` (scored with the DARTS batch size)."""
    cfg = cfg if isinstance(cfg, DartsCfg) else DartsCfg(**dict(cfg or {}))
    train, val = task.supernet_data()
    return build_supernet_trainer(space, train, val, task.supernet_loss, task.supernet_score(cfg.batch_size),
                                  epochs=epochs, cfg=cfg, seed=seed, device=device)
