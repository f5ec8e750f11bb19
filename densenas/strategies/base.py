"""Ask/tell strategy interface (NNI ``Strategy`` / Optuna ask-tell style).

Two kinds of strategy are driven by the one loop of :mod:`densenas.loop`:

- *sampling* strategies (``one_shot = False``: random search, REINFORCE after Zoph & Le, regularized
  evolution after Real et al.) propose architectures and are told their results; they never train
  anything themselves, so any executor (the search loop, a tabular benchmark, a test) can drive them;
- *one-shot* strategies (``one_shot = True``: DARTS, Liu, Simonyan, Yang, ICLR 2019) train one supernet
  through the evaluator they are attached to, one :meth:`OneShotStrategy.step` (epoch) at a time, and
  propose the architecture the supernet encodes.

Every sampling strategy implements :meth:`Strategy.suggest`; the loop calls :meth:`Strategy.propose`, which
first hands out the archs queued with :meth:`Strategy.seed_with` (a zero-cost warm start, archs a user
already trusts) and then the strategy's own suggestions. :meth:`Strategy.propose_batch` asks for several
at once (parallel workers); a strategy that models the search (the surrogate) treats proposed but not yet
observed archs as pending.

All state needed to continue a search after the process died is returned by :meth:`Strategy.state_dict`;
it must be plain data (dict, list, tuple, str, int, float, bool, None, bytes) and tensors only, so that it
loads with ``torch.load(weights_only=True)`` (numpy bit-generator states are dicts of ints: fine).
"""
from __future__ import annotations

from typing import Any, Iterable

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
        self.queue: list[Arch] = []

    def seed_with(self, archs: Iterable[Arch]) -> None:
        """Queue archs to be proposed first, in order, before the strategy's own suggestions.

        Used for a zero-cost warm start (:mod:`densenas.zerocost`) and for archs a user already knows.
        Their results reach :meth:`observe` like any other, so every strategy learns from them.

        Raises:
            InvalidArch: an arch is not in this strategy's space (names the field).
        """
        for arch in archs:
            self.space.check(arch)
            self.queue.append(arch)

    def propose(self) -> Arch:
        """The next arch to evaluate: the queue's head, else :meth:`suggest`."""
        if self.queue:
            return self.queue.pop(0)
        return self.suggest()

    def propose_batch(self, n: int) -> list[Arch]:
        """``n`` proposals to evaluate in parallel, before any of them is observed."""
        return [self.propose() for _ in range(int(n))]

    def suggest(self) -> Arch:
        """The strategy's own next proposal (subclasses implement it)."""
        raise NotImplementedError

    def observe(self, arch: Arch, result: Result) -> None:
        """Tell the strategy the result of an architecture it (or the history) proposed."""

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: the RNG and the warm-start queue (subclasses add theirs)."""
        return {"rng": self.rng.bit_generator.state, "queue": [a.to_dict() for a in self.queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.queue = [Arch.from_dict(a) for a in state.get("queue", ())]


class RandomSearch(Strategy):
    """Uniform random sampling over valid archs: the honest baseline every strategy must beat."""

    def suggest(self) -> Arch:
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
