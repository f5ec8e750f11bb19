"""Toy space and evaluator for fast loop/history tests: reward is a known function of the decisions."""
from __future__ import annotations

import math
import time

import numpy as np

from densenas.arch import Arch, Decision
from densenas.result import Result
from densenas.space import SearchSpace, TableSpace

TARGET = (2, 0, 1, 2, 1)
N_DEC, N_OPT = 6, 4  # the strategy tests' 6 x 4 table toy


def toy_space(table=None) -> TableSpace:
    """6 decisions x 4 options ``op0..op3``; with ``table``, only the archs whose keys it holds are valid."""
    return TableSpace("toy", [Decision(f"d{i}", tuple(f"op{j}" for j in range(N_OPT))) for i in range(N_DEC)],
                      table)


def target_for(seed: int) -> list[int]:
    """The optimum (option indices) of the toy for ``seed``."""
    return np.random.default_rng(1000 + seed).integers(N_OPT, size=N_DEC).tolist()


class ToySpace(SearchSpace):
    name = "toy"

    def __init__(self, n: int = 5, k: int = 3):
        self.n, self.k = n, k

    def decisions(self) -> list[Decision]:
        return [Decision(f"d{i}", tuple(range(self.k))) for i in range(self.n)]

    def build(self, arch, in_shapes):  # pragma: no cover - never trained
        raise NotImplementedError


class ToyEvaluator:
    """Reward = fraction of decisions equal to TARGET; ``fail_on`` archs raise, ``nan_on`` give NaN."""

    def __init__(self, delay: float = 0.0, fail_on: set[str] = frozenset(), nan_on=frozenset()):
        self.delay, self.fail_on, self.nan_on = delay, set(fail_on), set(nan_on)
        self.calls: list[str] = []

    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        self.calls.append(arch.key)
        time.sleep(self.delay)
        if arch.key in self.fail_on:
            raise RuntimeError("boom")
        if arch.key in self.nan_on:
            return Result.failed("diverged: loss is nan at stage 1 iter 3", stage=1)
        vals = [arch[f"d{i}"] for i in range(len(TARGET))]
        r = sum(v == t for v, t in zip(vals, TARGET)) / len(TARGET)
        return Result(reward=r, metrics={"stage1_reward": r}, stage=1)


def reward_of(arch: Arch) -> float:
    return sum(arch[f"d{i}"] == t for i, t in enumerate(TARGET)) / len(TARGET)


assert math.isclose(reward_of(Arch("toy", tuple((f"d{i}", t) for i, t in enumerate(TARGET)))), 1.0)
