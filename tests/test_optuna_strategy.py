"""Optuna samplers as strategies (:mod:`densenas.strategies.optuna_study`) on a toy tabular space, CPU.

TPE (Bergstra et al. 2011) beats random search on a 6 x 4 space with a known optimum; TPE, NSGA-II
(Deb et al. 2002, two objectives), CMA-ES and random resume bit-for-bit through ``state_dict`` (also
via JSON and ``torch.save`` bytes) with a trial pending; failed results, invalid archs, archs never
proposed, parallel proposals and configuration errors are handled.
"""
from __future__ import annotations

import io
import json
import math

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from toy import N_DEC, N_OPT, target_for, toy_space

from densenas.arch import Arch, Decision, InvalidArch
from densenas.result import Result
from densenas.space import TableSpace
from densenas.strategies import RandomSearch, Strategy
from densenas.strategies.optuna_study import (DUPLICATE_ATTR, INVALID_ATTR, OptunaStrategy,
                                              available_samplers, parse_objectives)

TWO = [("reward", "maximize"), ("params", "minimize")]




def toy_result(space: TableSpace, arch: Arch, target: list[int]) -> Result:
    """Reward: decisions matching ``target``; cost ``params``: sum of the option indices."""
    idx = arch.indices(space.decisions())
    return Result(reward=float(sum(int(i == t) for i, t in zip(idx, target))),
                  cost={"params": float(sum(idx))}, metrics={"miou": 0.5})


def queries_to_optimum(strategy: Strategy, target: list[int], cap: int) -> int:
    """Distinct archs queried until the optimum is proposed (``cap`` if never)."""
    space, seen = strategy.space, set()
    for _ in range(20 * cap):
        arch = strategy.propose()
        seen.add(arch.key)
        result = toy_result(space, arch, target)
        if result.reward == N_DEC or len(seen) >= cap:
            break
        strategy.observe(arch, result)
    return len(seen)


def drive(strategy: Strategy, steps: int, target: list[int]) -> list[str]:
    keys = []
    for _ in range(steps):
        arch = strategy.propose()
        keys.append(arch.key)
        strategy.observe(arch, toy_result(strategy.space, arch, target))
    return keys


def _roundtrip(state: dict, how: str) -> dict:
    if how == "json":
        return json.loads(json.dumps(state))
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def _states(strategy: OptunaStrategy) -> list[TrialState]:
    return [t.state for t in strategy.study.get_trials(deepcopy=False)]


# ------------------------------------------------------------------------------------ learning
def test_tpe_beats_random():
    space = toy_space()
    tpe_q, rand_q = [], []
    for seed in range(5):
        target = target_for(seed)
        tpe_q.append(queries_to_optimum(OptunaStrategy(space, seed=seed), target, cap=400))
        rand_q.append(queries_to_optimum(RandomSearch(space, seed=seed), target, cap=4096))
    # random search needs ~2000 distinct queries on average for 1 optimum among 4096 archs
    assert np.median(rand_q) > 500
    assert np.median(tpe_q) < np.median(rand_q) / 4, (tpe_q, rand_q)
    assert np.median(tpe_q) < 200, tpe_q


def test_dedup_never_repeats_a_seen_arch():
    space, target = toy_space(), target_for(2)
    s = OptunaStrategy(space, seed=2)
    keys = drive(s, 40, target)
    assert len(set(keys)) == len(keys)
    assert s.stats["duplicate"] > 0  # TPE did re-propose known archs: they were finished infeasible
    dups = [t for t in s.study.get_trials(deepcopy=False) if t.user_attrs.get(DUPLICATE_ATTR)]
    assert dups and all(t.state == TrialState.COMPLETE and list(t.system_attrs["constraints"]) == [1.0]
                        for t in dups)


def test_nsga2_two_objectives_and_tpe_multi_objective():
    space, target = toy_space(), target_for(0)
    for sampler, kw in [("NSGAIISampler", {"population_size": 6}), ("TPESampler", {})]:
        s = OptunaStrategy(space, seed=0, sampler=sampler, sampler_kwargs=kw, objectives=TWO)
        drive(s, 30, target)
        done = s.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        assert len(s.study.directions) == 2 and all(len(t.values) == 2 for t in done)
        assert s.study.best_trials  # a Pareto front exists


# -------------------------------------------------------------------------------- state / resume
CONFIGS = [("TPESampler", {}, None), ("RandomSampler", {}, None),
           ("NSGAIISampler", {"population_size": 6}, TWO), ("CmaEsSampler", {}, None)]


@pytest.mark.parametrize("how", ["json", "torch"])
@pytest.mark.parametrize("sampler,kw,objectives", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resume_is_bit_for_bit(sampler, kw, objectives, how):
    space, target = toy_space(), target_for(3)
    make = lambda seed: OptunaStrategy(space, seed=seed, sampler=sampler, sampler_kwargs=kw,  # noqa: E731
                                       objectives=objectives)
    a = make(3)
    drive(a, 20, target)  # NSGA-II: past 3 generations
    running = a.propose()  # killed while this candidate trained
    state = a.state_dict()
    assert json.loads(json.dumps(state)) == state  # plain data, no tuples
    b = make(77)  # other seed: it comes from the state
    b.load_state_dict(_roundtrip(state, how))
    assert b.pending() == a.pending() == [len(a.study.trials) - 1]
    for s in (a, b):  # the loop re-evaluates the interrupted candidate: its trial is told
        s.observe(running, toy_result(space, running, target))
    assert a.pending() == b.pending() == []
    assert drive(a, 15, target) == drive(b, 15, target)
    assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]
    assert [t.values for t in a.study.trials] == [t.values for t in b.study.trials]
    assert a.rng.bit_generator.state == b.rng.bit_generator.state and a.stats == b.stats


def test_state_rejects_other_space_and_objectives():
    state = OptunaStrategy(toy_space()).state_dict()
    with pytest.raises(ValueError, match="state is for space"):
        OptunaStrategy(TableSpace("other", [Decision("x", (1, 2))])).load_state_dict(state)
    with pytest.raises(ValueError, match="state is for objectives"):
        OptunaStrategy(toy_space(), objectives=TWO).load_state_dict(state)


def test_resumed_history_and_other_sampler_continue():
    """A random-search state replayed into TPE (a user switching samplers) keeps every trial."""
    space, target = toy_space(), target_for(1)
    a = OptunaStrategy(space, seed=1, sampler="RandomSampler")
    before = set(drive(a, 12, target))
    b = OptunaStrategy(space, seed=1, sampler="TPESampler")
    b.load_state_dict(a.state_dict())
    assert len(b.study.trials) == len(a.study.trials)
    after = drive(b, 10, target)
    assert len(set(after)) == 10 and not set(after) & before  # dedup knows the replayed archs


# ------------------------------------------------------------------------ validity and failures
def test_failed_results_become_fail_trials():
    space, target = toy_space(), target_for(0)
    s = OptunaStrategy(space, seed=0, objectives=TWO)
    for i in range(14):
        arch = s.propose()
        if i % 3 == 0:
            s.observe(arch, Result.failed("oom"))
        elif i % 3 == 1:  # a non-finite objective value is a failure too
            s.observe(arch, Result(reward=1.0, cost={"params": math.nan}))
        else:
            s.observe(arch, toy_result(space, arch, target))
    s.observe(space.from_indices([0] * N_DEC), Result.failed("diverged"))  # never proposed
    states = _states(s)
    assert states.count(TrialState.FAIL) == 5 + 5 + 1 and TrialState.RUNNING not in states
    assert len({a.key for a in s.propose_batch(3)}) == 3  # still proposing


@pytest.mark.parametrize("sampler", ["TPESampler", "RandomSampler"])
def test_invalid_archs_are_never_proposed(sampler):
    full = toy_space()
    valid = {a.key: 1.0 for a in (full.from_indices(i) for i in np.ndindex(*(N_OPT,) * N_DEC))
             if a["d0"] != "op0" and a["d1"] != a["d2"]}
    space = toy_space(valid)
    s = OptunaStrategy(space, seed=0, sampler=sampler)
    for _ in range(30):
        arch = s.propose()
        assert arch.key in valid
        s.observe(arch, Result(reward=float(arch["d3"] == "op1")))
    assert s.stats["invalid"] > 0
    invalid = [t for t in s.study.get_trials(deepcopy=False) if t.user_attrs.get(INVALID_ATTR)]
    if sampler == "TPESampler":  # models constraints: invalid archs are infeasible trials
        assert len(invalid) == s.stats["invalid"]
        assert all(list(t.system_attrs["constraints"]) == [1.0] for t in invalid)
    else:  # RandomSampler does not: FAIL trials
        assert not invalid and _states(s).count(TrialState.FAIL) == s.stats["invalid"]


def test_falls_back_to_space_sample():
    few = [toy_space().from_indices([i] * N_DEC) for i in range(3)]

    class Tiny(TableSpace):
        def sample(self, rng):
            return few[int(rng.integers(len(few)))]

    space = Tiny("toy", toy_space().decisions(), {a.key: 0.0 for a in few})
    s = OptunaStrategy(space, seed=0, max_invalid=2)
    proposals = [s.propose() for _ in range(6)]
    assert all(a in few for a in proposals) and s.stats["fallback"] > 0
    for arch in proposals:
        s.observe(arch, Result(reward=1.0))
    fixed = [t for t in s.study.trials if "fixed_params" in t.system_attrs]
    assert len(fixed) == s.stats["fallback"] and all(len(t.params) == N_DEC for t in fixed)


def test_observe_arch_never_proposed_and_warm_start():
    space, target = toy_space(), target_for(4)
    s = OptunaStrategy(space, seed=4)
    best = space.from_indices(target)
    s.observe(best, toy_result(space, best, target))  # e.g. answered from a resumed history
    s.observe(best, toy_result(space, best, target))  # observed twice: fine
    t = s.study.trials[0]
    assert t.state == TrialState.COMPLETE and t.params == {f"d{i}": v for i, v in enumerate(target)}
    assert list(t.system_attrs["constraints"]) == [0.0]  # feasible for the constrained TPE
    seeded = space.from_indices([1] * N_DEC)
    s.seed_with([seeded])
    assert s.propose() == seeded
    s.observe(seeded, toy_result(space, seeded, target))
    assert len(s.study.trials) == 3 and s.pending() == []
    assert s.propose() not in (best, seeded)
    with pytest.raises(InvalidArch):
        s.observe(Arch("other", (("d0", "op0"),)), Result(reward=1.0))


def test_propose_batch_then_observe_in_any_order():
    space, target = toy_space(), target_for(5)
    s = OptunaStrategy(space, seed=5)
    drive(s, 12, target)
    batch = s.propose_batch(4)
    assert len(batch) == 4 and len({a.key for a in batch}) == 4 and len(s.pending()) == 4
    for arch in reversed(batch):
        s.observe(arch, toy_result(space, arch, target))
    assert s.pending() == [] and TrialState.RUNNING not in _states(s)


# ---------------------------------------------------------------------------------- configuration
def test_configuration_errors_are_clear():
    space = toy_space()
    assert {"TPESampler", "NSGAIISampler", "RandomSampler", "CmaEsSampler"} <= set(available_samplers())
    with pytest.raises(ValueError, match="unknown optuna sampler 'TPE'.*TPESampler"):
        OptunaStrategy(space, sampler="TPE")
    with pytest.raises(ValueError, match="must not hold 'seed'"):
        OptunaStrategy(space, sampler_kwargs={"seed": 1})
    with pytest.raises(ValueError, match="bad sampler_kwargs"):
        OptunaStrategy(space, sampler_kwargs={"n_startup": 3})
    s = OptunaStrategy(space, objectives=[("reward", "maximize"), ("latency_ms", "minimize")])
    arch = s.propose()
    with pytest.raises(ValueError, match=r"'latency_ms' is not in the result.*\['params'\].*\['miou'\]"):
        s.observe(arch, toy_result(space, arch, target_for(0)))
    s.observe(arch, Result.failed("oom"))  # a failed result needs no objective values


def test_parse_objectives():
    assert parse_objectives(None) == [("reward", "maximize")]
    assert parse_objectives(["reward", {"key": "params", "direction": "minimize"},
                             ["miou", "MAXIMIZE"]]) == [("reward", "maximize"), ("params", "minimize"),
                                                        ("miou", "maximize")]
    with pytest.raises(ValueError, match="'params': direction"):
        parse_objectives(["params"])
    with pytest.raises(ValueError, match="direction"):
        parse_objectives([("reward", "up")])


def test_quiet_without_overriding_a_quieter_setting():
    before = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)
        OptunaStrategy(toy_space())
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        OptunaStrategy(toy_space())
        assert optuna.logging.get_verbosity() == optuna.logging.ERROR
    finally:
        optuna.logging.set_verbosity(before)
