"""Ask/tell strategy interface (NNI ``Strategy`` / Optuna ask-tell style).

A strategy proposes architectures and is told their results; it never trains anything itself, so any
executor (the sequential search loop, a tabular benchmark, a test) can drive it. All state needed to
continue a search after the process died is returned by :meth:`state_dict` and must be JSON- or
``torch.save``-serialisable.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..arch import Arch
from ..result import Result
from ..space import SearchSpace


class Strategy:
    """Base class for search strategies."""

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def propose(self) -> Arch:
        raise NotImplementedError

    def observe(self, arch: Arch, result: Result) -> None:
        """Tell the strategy the result of an architecture it (or the history) proposed."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class RandomSearch(Strategy):
    """Uniform random sampling over valid archs: the honest baseline every strategy must beat."""

    def propose(self) -> Arch:
        return self.space.sample(self.rng)
