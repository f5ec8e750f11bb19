"""DARTS as a one-shot strategy: train one supernet epoch by epoch, propose the arch it encodes.

After Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search" (ICLR 2019), first-order variant,
as used by Auto-DeepLab (Liu et al., CVPR 2019) and IR-NAS (Zhang et al., "Memory-Efficient Hierarchical
Neural Architecture Search for Image Restoration"). :class:`Darts` holds the hyper-parameters
(:class:`DartsCfg`, the config's ``strategy`` section) and decides what one step is; the training itself
(optimisers, batches, loss, score) is done by the evaluator it is attached to, a
:class:`~densenas.evaluation.supernet.SupernetTrainer` (task-agnostic: the task supplies ``loss_fn`` and
``score_fn``). This module imports nothing about training: the evaluator is used through
:class:`SupernetEvaluator` only.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from ..arch import Arch
from ..result import Result
from ..space import SearchSpace
from ..differentiable import Supernet
from .base import OneShotStrategy


@dataclass
class DartsCfg:
    """Hyper-parameters of first-order DARTS (defaults: DARTS / Auto-DeepLab).

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
        total_epochs: length of the cosine schedule; ``None`` keeps ``w_lr`` constant (the search's
            epoch count when built by :func:`~densenas.evaluation.supernet.build_supernet_trainer`).
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

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists): what checkpoints store."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class SupernetEvaluator(Protocol):
    """What :class:`Darts` needs from its evaluator (:class:`~densenas.evaluation.supernet.SupernetTrainer`)."""

    supernet: Supernet
    epoch: int

    def train_epoch(self) -> dict[str, float]: ...

    def score(self) -> tuple[float, dict[str, float]]: ...

    def cost(self, arch: Arch) -> dict[str, float]: ...


class Darts(OneShotStrategy):
    """First-order DARTS: each step is one epoch of alternating weight / α-β updates, then derivation.

    Args:
        space: a differentiable space (``build_supernet()`` and ``derive()``; Auto-DeepLab, IR-NAS).
        seed: the strategy's seed (the supernet's initialisation and batch order are seeded by the
            evaluator, which is built with the same seed).
        **cfg: :class:`DartsCfg` fields.

    Raises:
        ValueError: ``space`` has no supernet, or an unknown :class:`DartsCfg` field.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, **cfg: Any):
        if not callable(getattr(space, "build_supernet", None)):
            raise ValueError(f"strategy 'darts' needs a differentiable space (with build_supernet()); "
                             f"space {getattr(space, 'name', type(space).__name__)!r} has none")
        known = {f.name for f in fields(DartsCfg)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"strategy 'darts': unknown keys {unknown}; known: {sorted(known)}")
        super().__init__(space, seed)
        self.cfg = DartsCfg(**cfg)
        self.best: tuple[int, float] | None = None  # (step, reward) of the best-scoring supernet

    @property
    def steps_done(self) -> int:
        return int(self._attached().epoch)

    def propose(self) -> Arch:
        """The arch the supernet encodes now (``derive()``: strongest ops and paths)."""
        return self._attached().supernet.derive()

    def step(self) -> tuple[Arch, Result]:
        """One epoch: train (weights on split A, α/β on split B after the warm-up), derive, score.

        Returns:
            The derived arch and its result: the supernet's reward on the validation split, metrics
            (the score's and the epoch's ``w_loss``, ``a_loss``, ``lr``), ``stage`` = epoch, the derived
            arch's cost.

        Raises:
            FloatingPointError: a non-finite loss (the supernet diverged).
        """
        ev = self._attached()
        stats = ev.train_epoch()
        arch = ev.supernet.derive()
        reward, metrics = ev.score()
        metrics = {**{k: float(v) for k, v in metrics.items()}, **stats}
        return arch, Result(reward=float(reward), metrics=metrics, stage=int(ev.epoch), cost=dict(ev.cost(arch)))

    def observe(self, arch: Arch, result: Result) -> None:
        if result.ok and (self.best is None or result.reward > self.best[1]):
            self.best = (result.stage, float(result.reward))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "strategy": "darts", "cfg": self.cfg.to_dict(),
                "best": None if self.best is None else list(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        best = state.get("best")
        self.best = None if best is None else (int(best[0]), float(best[1]))


# The config's ``strategy`` section is flat (``dict(type="darts", w_lr=..., ...)``): expose the DartsCfg
# fields as keyword parameters of Darts, so config checks (``densenas.config.check_keys``) see them.
Darts.__signature__ = inspect.Signature([
    *list(inspect.signature(Darts.__init__).parameters.values())[1:3],
    *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(DartsCfg))])
