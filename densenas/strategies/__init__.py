"""Search strategies: random search, REINFORCE controller (Zoph & Le; Nekrasov et al. 2019), regularized
evolution (Real et al. 2019), surrogate-guided Bayesian optimisation (PNAS / BANANAS / SMAC style), Optuna's samplers (TPE, NSGA-II, ...)
through ask-and-tell, and
the one-shot DARTS (Liu et al., ICLR 2019), plus :func:`build_strategy` to
make one from a config dict. Every one is driven by :func:`densenas.loop.run`."""
from __future__ import annotations

from typing import Any, Mapping

from ..space import SearchSpace
from .base import OneShotStrategy, RandomSearch, Strategy
from .darts import Darts, DartsCfg
from .evolution import RegularizedEvolution
from .reinforce import ReinforceController
from .optuna_study import OptunaStrategy
from .surrogate import SurrogateSearch

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "reinforce": ReinforceController,
    "evolution": RegularizedEvolution,
    "darts": Darts,
    "surrogate": SurrogateSearch,
    "optuna": OptunaStrategy,
}


def build_strategy(cfg: Mapping[str, Any], space: SearchSpace) -> Strategy:
    """Build a strategy from ``{"type": name, **kwargs}``; the kwargs go to its constructor.

    Args:
        cfg: config dict; ``type`` is one of :data:`STRATEGIES` (e.g. ``"reinforce"``), the remaining
            keys (``seed``, ``lr``, ...) are passed on. ``cfg`` itself is not modified.
        space: the search space the strategy proposes from.

    Raises:
        ValueError: ``type`` missing or unknown.
    """
    kwargs = dict(cfg)
    kind = kwargs.pop("type", None)
    if kind not in STRATEGIES:
        raise ValueError(f"strategy config needs 'type' in {sorted(STRATEGIES)}, got {kind!r}")
    return STRATEGIES[kind](space, **kwargs)


__all__ = ["Strategy", "OneShotStrategy", "RandomSearch", "ReinforceController", "RegularizedEvolution",
           "Darts", "DartsCfg", "SurrogateSearch", "OptunaStrategy", "STRATEGIES", "build_strategy"]
