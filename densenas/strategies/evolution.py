"""Regularized (aging) evolution, ask/tell.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture Search"
(AAAI 2019). The population starts with random valid archs; afterwards every proposal is a mutation
(``space.mutate``: one decision changed) of the best member of a uniformly drawn sample, and every
observed result joins the population while the oldest member leaves. As in NNI's
``RegularizedEvolution(dedup=True)``, proposals avoid archs already proposed or observed where they can:
without that, once the best member's few valid neighbours are known the population fills with copies of
them and the search stalls.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..arch import Arch
from ..result import Result
from ..space import SearchSpace
from .base import Strategy


class RegularizedEvolution(Strategy):
    """Tournament selection + mutation with age-based removal (Real et al. 2019).

    Failed results (``result.ok`` False) enter the population with reward ``-inf``: they still push
    the oldest member out (as in the paper, every evaluated model ages the population) but are never
    chosen as a parent while a finite-reward member is in the sample.

    Args:
        space: the search space; ``space.sample`` seeds the population, ``space.mutate`` makes children.
        seed: seeds the numpy RNG.
        population_size: members kept (the paper's ``P``); the first ``P`` proposals are random.
        sample_size: members drawn per tournament (the paper's ``S``), capped at the population size.
        dedup: redraw (new tournament and mutation, or new random sample) up to ``dedup_tries`` times
            while the proposal was already seen; then propose it anyway.
        dedup_tries: bound on those redraws.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, population_size: int = 20,
                 sample_size: int = 5, dedup: bool = True, dedup_tries: int = 100):
        super().__init__(space, seed)
        if population_size < 1 or sample_size < 1:
            raise ValueError("population_size and sample_size must be >= 1")
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.dedup = bool(dedup)
        self.dedup_tries = max(1, int(dedup_tries))
        self.population: deque[tuple[Arch, float]] = deque()
        self.seen: set[str] = set()

    def suggest(self) -> Arch:
        """A random arch while the population fills, then a mutated tournament winner."""
        for _ in range(self.dedup_tries if self.dedup else 1):
            arch = self._draw()
            if arch.key not in self.seen:
                break
        self.seen.add(arch.key)
        return arch

    def _draw(self) -> Arch:
        if len(self.population) < self.population_size:
            return self.space.sample(self.rng)
        k = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        parent = max((self.population[int(i)] for i in picks), key=lambda m: m[1])[0]
        try:
            return self.space.mutate(parent, self.rng)
        except RuntimeError:  # no valid one-decision change (e.g. an isolated arch of a table space)
            return self.space.sample(self.rng)

    def observe(self, arch: Arch, result: Result) -> None:
        """Add the arch (newest) and drop the oldest member beyond ``population_size``."""
        reward = float(result.reward) if result.ok else float("-inf")
        self.seen.add(arch.key)
        self.population.append((arch, reward))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def best(self) -> tuple[Arch, float] | None:
        """Best member of the current population (``None`` while empty)."""
        return max(self.population, key=lambda m: m[1]) if self.population else None

    def state_dict(self) -> dict[str, Any]:
        """RNG state, population (oldest first) and seen archs; JSON-serialisable (``-inf`` -> ``None``)."""
        return {
            **super().state_dict(),
            "type": "evolution",
            "population": [[a.to_dict(), r if np.isfinite(r) else None] for a, r in self.population],
            "seen": sorted(self.seen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque(
            (Arch.from_dict(a), float("-inf") if r is None else float(r)) for a, r in state["population"])
        self.seen = set(state.get("seen", ()))
