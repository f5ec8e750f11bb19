"""Ask/tell strategy interface (NNI ``Strategy`` / Optuna ask-tell style).

Two kinds of strategy are driven by the one loop of :mod:`densenas.loop`:

- *sampling* strategies (``one_shot = False``: random search, REINFORCE after Zoph & Le, regularized
  evolution after Real et al.) propose architectures and are told their results; they never train
  anything themselves, so any executor (the search loop, a tabular benchmark, a test) can drive them;
- *one-shot* strategies (``one_shot = True``: DARTS, Liu, Simonyan, Yang, ICLR 2019) train one supernet
  through the evaluator they are attached to, one :meth:`OneShotStrategy.step` (epoch) at a time, and
  propose the architecture the supernet encodes.

All state needed to continue a search after the process died is returned by :meth:`Strategy.state_dict`;
it must be plain data (dict, list, tuple, str, int, float, bool, None, bytes) and tensors only, so that it
loads with ``torch.load(weights_only=True)`` (numpy bit-generator states are dicts of ints: fine).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..arch import Arch
from ..result import Result
from ..space import SearchSpace


class Strategy:
    """Base class for search strategies.

    Attributes:
        one_shot: ``False``: the loop asks :meth:`propose`, has the evaluator train the arch and tells
            :meth:`observe` (one history row per candidate). ``True``: see :class:`OneShotStrategy`.
    """

    one_shot: bool = False

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


class OneShotStrategy(Strategy):
    """A strategy that trains one supernet through its evaluator (NNI's one-shot strategies).

    The loop calls :meth:`attach` once, then :meth:`step` until :attr:`steps_done` reaches the budget;
    each step's arch and result are recorded as a step of the run's single candidate and told to
    :meth:`observe`. The trained weights live in the evaluator (whose ``state_dict`` the loop checkpoints
    next to this strategy's); :meth:`propose` is the arch the supernet encodes now.
    """

    one_shot = True

    def __init__(self, space: SearchSpace, seed: int = 0):
        super().__init__(space, seed)
        self.evaluator: Any = None

    def attach(self, evaluator: Any) -> None:
        """Bind the evaluator whose supernet this strategy trains (before any other call)."""
        self.evaluator = evaluator

    def _attached(self) -> Any:
        if self.evaluator is None:
            raise RuntimeError(f"{type(self).__name__}: call attach(evaluator) before using the strategy")
        return self.evaluator

    @property
    def steps_done(self) -> int:
        """Finished steps (restored with the evaluator's checkpoint)."""
        raise NotImplementedError

    def step(self) -> tuple[Arch, Result]:
        """Run one step; returns the arch derived after it and its result (``stage`` = step number)."""
        raise NotImplementedError
