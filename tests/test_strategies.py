"""Strategy sanity checks on toy tabular spaces (NNI ``test_sanity.py`` style), all on CPU in seconds.

Covers the REINFORCE controller (Zoph & Le 2017; Nekrasov et al. 2019), regularized evolution (Real
et al. 2019) and random search: learning on a 6 x 4 space with a known reward, bit-for-bit resume
through ``state_dict`` (also via JSON and ``torch.save`` bytes), invalid-arch resampling, failures.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from toy import N_DEC, N_OPT, target_for, toy_space

from densenas.arch import Arch, Decision, InvalidArch
from densenas.result import Result
from densenas.space import TableSpace
from densenas.strategies import (RandomSearch, RegularizedEvolution, ReinforceController, Strategy,
                                 build_strategy)

SEEDS = range(5)




def matches(space: TableSpace, arch: Arch, target: list[int]) -> int:
    return sum(int(i == t) for i, t in zip(arch.indices(space.decisions()), target))


def queries_to_optimum(strategy: Strategy, target: list[int], cap: int) -> int:
    """Distinct archs queried until the optimum is proposed (``cap`` if never)."""
    space, seen = strategy.space, set()
    for _ in range(20 * cap):
        arch = strategy.propose()
        seen.add(arch.key)
        reward = matches(space, arch, target)
        if reward == N_DEC or len(seen) >= cap:
            break
        strategy.observe(arch, Result(reward=float(reward)))
    return len(seen)


def drive(strategy: Strategy, steps: int, target: list[int]) -> list[str]:
    """Propose/observe ``steps`` times with the toy reward; returns the proposed arch keys."""
    keys = []
    for _ in range(steps):
        arch = strategy.propose()
        keys.append(arch.key)
        strategy.observe(arch, Result(reward=float(matches(strategy.space, arch, target))))
    return keys


# ------------------------------------------------------------------------------------ learning
def test_reinforce_learns_and_beats_random():
    space = toy_space()
    ctrl_q, rand_q = [], []
    for seed in SEEDS:
        target = target_for(seed)
        best = space.from_indices(target)
        ctrl = ReinforceController(space, seed=seed)
        p0 = np.mean([p[t] for p, t in zip(ctrl.probabilities(best), target)])
        assert p0 == pytest.approx(1 / N_OPT, abs=0.05)  # starts (almost) uniform
        ctrl_q.append(queries_to_optimum(ctrl, target, cap=1000))
        drive(ctrl, 50, target)
        p1 = np.mean([p[t] for p, t in zip(ctrl.probabilities(best), target)])
        assert p1 > 0.6, f"seed {seed}: mean prob of the best options only {p0:.2f} -> {p1:.2f}"
        rand_q.append(queries_to_optimum(RandomSearch(space, seed=seed), target, cap=4096))
    # random search needs ~2000 distinct queries on average for 1 optimum among 4096 archs
    assert np.median(rand_q) > 500
    assert np.median(ctrl_q) < np.median(rand_q) / 4, (ctrl_q, rand_q)
    assert np.median(ctrl_q) < 300, ctrl_q


def test_reinforce_greedy_reaches_target_probability_mass():
    space, target = toy_space(), target_for(0)
    ctrl = ReinforceController(space, seed=0)
    before = ctrl.log_prob(space.from_indices(target))
    drive(ctrl, 150, target)
    after = ctrl.log_prob(space.from_indices(target))
    assert after > before + 3.0  # probability of the optimum rose by > e^3 (from 1/4096)
    assert ctrl.greedy().indices(space.decisions()) == target


def test_evolution_beats_random():
    space = toy_space()
    evo_q, rand_q = [], []
    for seed in SEEDS:
        target = target_for(seed)
        evo = RegularizedEvolution(space, seed=seed, population_size=10, sample_size=3)
        evo_q.append(queries_to_optimum(evo, target, cap=1000))
        assert len(evo.population) <= 10
        rand_q.append(queries_to_optimum(RandomSearch(space, seed=seed), target, cap=4096))
    assert np.median(evo_q) < np.median(rand_q) / 4, (evo_q, rand_q)


def test_evolution_ages_out_oldest_and_skips_failures_as_parents():
    space = toy_space()
    evo = RegularizedEvolution(space, seed=0, population_size=3, sample_size=3)
    archs = [space.from_indices([i] * N_DEC) for i in range(N_OPT)]
    for a, r in zip(archs, [5.0, 1.0, 2.0, 3.0]):
        evo.observe(a, Result(reward=r))
    assert [a for a, _ in evo.population] == archs[1:]  # the oldest (and best) one is gone
    evo.observe(archs[0], Result.failed("oom"))
    assert evo.best() == (archs[3], 3.0)
    child = evo.propose()  # mutation of the tournament winner archs[3]: one decision differs
    assert sum(x != y for x, y in zip(child.indices(space.decisions()),
                                      archs[3].indices(space.decisions()))) == 1


# -------------------------------------------------------------------------------- state / resume
def _roundtrip(state: dict, how: str) -> dict:
    if how == "json":
        return json.loads(json.dumps(state))
    if how == "torch":
        buf = io.BytesIO()
        torch.save(state, buf)
        return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    return state


@pytest.mark.parametrize("how", ["plain", "json", "torch"])
def test_reinforce_resume_is_bit_for_bit(how):
    space, target = toy_space(), target_for(3)
    a = ReinforceController(space, seed=3, batch_size=2, tanh_constant=2.5)
    drive(a, 7, target)  # 3 updates done, 1 result pending in the batch buffer
    assert len(a.buffer) == 1
    state = _roundtrip(a.state_dict(), how)
    b = ReinforceController(space, seed=123, batch_size=2, tanh_constant=2.5)  # other seed, weights
    b.load_state_dict(state)
    assert drive(a, 12, target) == drive(b, 12, target)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    assert a.baseline == b.baseline and a.stats == b.stats


def test_reinforce_state_rejects_other_space():
    state = ReinforceController(toy_space()).state_dict()
    other = TableSpace("other", [Decision("x", (1, 2))])
    with pytest.raises(ValueError, match="state is for space"):
        ReinforceController(other).load_state_dict(state)


@pytest.mark.parametrize("how", ["json", "torch"])
def test_evolution_and_random_resume(how):
    space, target = toy_space(), target_for(1)
    for cls, kw in [(RegularizedEvolution, {"population_size": 5, "sample_size": 2}),
                    (RandomSearch, {})]:
        a = cls(space, seed=1, **kw)
        drive(a, 9, target)
        b = cls(space, seed=2, **kw)
        b.load_state_dict(_roundtrip(a.state_dict(), how))
        assert drive(a, 15, target) == drive(b, 15, target)


# ------------------------------------------------------------------------ validity and failures
def test_reinforce_resamples_invalid_archs():
    full = toy_space()
    valid = {a.key: 1.0 for a in (full.from_indices(i) for i in np.ndindex(*(N_OPT,) * N_DEC))
             if a["d0"] != "op0" and a["d1"] != a["d2"]}
    space = toy_space(valid)
    ctrl = ReinforceController(space, seed=0)
    for _ in range(40):
        arch = ctrl.propose()
        assert arch.key in valid
        ctrl.observe(arch, Result(reward=1.0))
    assert ctrl.stats["resampled"] > 0 and ctrl.stats["fallback"] == 0


def test_reinforce_falls_back_to_space_sample():
    few = [toy_space().from_indices([i] * N_DEC) for i in range(2)]

    class Tiny(TableSpace):
        def sample(self, rng):
            return few[int(rng.integers(len(few)))]

    space = Tiny("toy", toy_space().decisions(), {a.key: 0.0 for a in few})
    ctrl = ReinforceController(space, seed=0, max_resample=3)
    proposals = [ctrl.propose() for _ in range(10)]
    assert all(a in few for a in proposals)
    assert ctrl.stats["fallback"] > 0


def test_reinforce_failure_lowers_probability():
    space = toy_space()
    ctrl = ReinforceController(space, seed=0, lr=0.05, batch_size=1)
    good, bad = space.from_indices([0] * N_DEC), space.from_indices([1] * N_DEC)
    ctrl.observe(good, Result(reward=0.5))
    ctrl.observe(good, Result(reward=0.6))
    baseline, before = ctrl.baseline, ctrl.log_prob(bad)
    ctrl.observe(bad, Result.failed("diverged"))
    assert ctrl.baseline == baseline  # failures do not move the baseline by default
    assert ctrl.log_prob(bad) < before
    explicit = ReinforceController(space, seed=0, batch_size=1, failure_reward=0.0)
    explicit.observe(good, Result(reward=1.0))
    explicit.observe(bad, Result.failed("oom"))
    assert explicit.baseline < 1.0


def test_reinforce_rejects_arch_of_other_space():
    ctrl = ReinforceController(toy_space())
    with pytest.raises(InvalidArch):
        ctrl.observe(Arch("other", (("d0", "op0"),)), Result(reward=1.0))


def test_reinforce_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ctrl = ReinforceController(toy_space(), seed=5)
    drive(ctrl, 3, target_for(0))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------- factory
def test_build_strategy():
    space = toy_space()
    cfg = {"type": "reinforce", "seed": 4, "lr": 0.02, "hidden_size": 32}
    ctrl = build_strategy(cfg, space)
    assert isinstance(ctrl, ReinforceController) and ctrl.seed == 4
    assert ctrl.optimizer.param_groups[0]["lr"] == 0.02 and ctrl.policy.lstm.hidden_size == 32
    assert cfg["type"] == "reinforce"  # not consumed
    assert isinstance(build_strategy({"type": "random"}, space), RandomSearch)
    evo = build_strategy({"type": "evolution", "population_size": 7}, space)
    assert isinstance(evo, RegularizedEvolution) and evo.population_size == 7
    with pytest.raises(ValueError, match="strategy config needs 'type'"):
        build_strategy({"type": "bohb"}, space)
    with pytest.raises(ValueError, match="'darts' needs a differentiable space"):  # one-shot: a supernet
        build_strategy({"type": "darts"}, space)
    with pytest.raises(ValueError):
        build_strategy({}, space)
