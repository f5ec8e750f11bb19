"""The contract every sampling strategy of the registry keeps (NNI ``test_sanity.py`` style, CPU, seconds).

Parametrized over :data:`densenas.strategies.STRATEGIES` (one-shot DARTS excepted; it is tested in
``test_darts.py``), so a strategy added to the registry is checked without a new test: it finds the optimum
of a toy space with a known optimum in fewer queries than random search (median over seeds), resumes bit
for bit from its ``state_dict`` (through JSON and through ``torch.save`` / ``torch.load(weights_only=True)``),
survives failed candidates, archs it never proposed and batch proposals, and proposes its warm-start queue
first.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from toy import target_for, toy_space

from densenas.arch import Arch
from densenas.result import Result
from densenas.space import TableSpace
from densenas.strategies import STRATEGIES, Strategy, build_strategy

SAMPLING = sorted(k for k, cls in STRATEGIES.items() if not cls.one_shot)
LEARNING = [k for k in SAMPLING if k != "random"]
CAP = 200  # distinct queries before a search counts as "did not find it" (random needs ~2000 on average)




def reward(space: TableSpace, arch: Arch, target: list[int]) -> float:
    """Decisions matching the target (the optimum scores N_DEC), with a bonus that makes it multiplicative."""
    hits = sum(int(i == t) for i, t in zip(arch.indices(space.decisions()), target))
    return float(hits + 0.1 * hits * hits)


def queries_to_optimum(strategy: Strategy, target: list[int]) -> int:
    """Distinct archs queried until the optimum is proposed (``CAP`` if never); known archs are answered
    from a cache and told again, as the search loop does with its history."""
    space, seen = strategy.space, {}
    for _ in range(20 * CAP):
        arch = strategy.propose()
        if arch.key not in seen:
            seen[arch.key] = Result(reward=reward(space, arch, target))
            if arch.indices(space.decisions()) == target or len(seen) >= CAP:
                break
        strategy.observe(arch, seen[arch.key])
    return len(seen)


@pytest.mark.parametrize("name", LEARNING)
def test_finds_the_optimum_in_fewer_queries_than_random(name):
    seeds = range(5)
    ours = [queries_to_optimum(build_strategy({"type": name, "seed": s}, toy_space()), target_for(s))
            for s in seeds]
    rand = [queries_to_optimum(build_strategy({"type": "random", "seed": s}, toy_space()), target_for(s))
            for s in seeds]
    assert np.median(rand) == CAP  # the toy is hard for random search within the cap
    assert np.median(ours) < np.median(rand), (name, ours, rand)


def _drive(strategy: Strategy, steps: int, target: list[int], fail_every: int = 0) -> list[str]:
    keys = []
    for i in range(steps):
        arch = strategy.propose()
        keys.append(arch.key)
        failed = fail_every and i % fail_every == fail_every - 1
        strategy.observe(arch, Result.failed("diverged: loss is nan") if failed else
                         Result(reward=reward(strategy.space, arch, target)))
    return keys


@pytest.mark.parametrize("how", ["json", "torch"])
@pytest.mark.parametrize("name", SAMPLING)
def test_resume_is_bit_for_bit(name, how):
    target = target_for(3)
    a = build_strategy({"type": name, "seed": 7}, toy_space())
    _drive(a, 14, target, fail_every=5)
    pending = a.propose_batch(2)  # proposed, not yet observed when the process dies
    state = a.state_dict()
    if how == "json":
        state = json.loads(json.dumps(state))
    else:
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
    b = build_strategy({"type": name, "seed": 123}, toy_space())  # the seed comes back from the state
    b.load_state_dict(state)
    for s in (a, b):
        for arch in pending:
            s.observe(arch, Result(reward=reward(s.space, arch, target)))
    assert _drive(a, 12, target, fail_every=4) == _drive(b, 12, target, fail_every=4)


@pytest.mark.parametrize("name", SAMPLING)
def test_survives_failures_foreign_archs_and_batches(name):
    space = toy_space()
    s = build_strategy({"type": name, "seed": 0}, space)
    rng = np.random.default_rng(0)
    for _ in range(6):  # every result so far failed
        s.observe(s.propose(), Result.failed("RuntimeError: boom"))
    foreign = space.sample(rng)  # answered from the history, never proposed by this strategy
    s.observe(foreign, Result(reward=1.0))
    s.observe(foreign, Result(reward=1.0))  # told twice
    batch = s.propose_batch(4)
    assert len(batch) == 4 and all(space.is_valid(a) for a in batch)
    for arch in batch:
        s.observe(arch, Result(reward=reward(space, arch, target_for(0))))
    keys = _drive(s, 10, target_for(0), fail_every=3)
    assert len(keys) == 10


@pytest.mark.parametrize("name", SAMPLING)
def test_warm_start_queue_comes_first_and_survives_resume(name):
    space = toy_space()
    rng = np.random.default_rng(5)
    queued = [space.sample(rng) for _ in range(3)]
    s = build_strategy({"type": name, "seed": 0}, space)
    s.seed_with(queued)
    first = s.propose()
    t = build_strategy({"type": name, "seed": 0}, space)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert first == queued[0] and [t.propose(), t.propose()] == queued[1:]


def test_proposals_stay_valid_on_a_constrained_table():
    rng = np.random.default_rng(0)
    allowed = {toy_space().sample(rng).key: 0.0 for _ in range(400)}
    for name in SAMPLING:
        space = toy_space(allowed)
        s = build_strategy({"type": name, "seed": 1}, space)
        for _ in range(25):
            arch = s.propose()
            assert arch.key in allowed, name
            s.observe(arch, Result(reward=float(sum(c == "op1" for _, c in arch.choices))))
