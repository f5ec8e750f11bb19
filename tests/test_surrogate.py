"""The surrogate-guided strategy (densenas/strategies/surrogate.py) beyond the registry contract: batch
proposals, failure handling, encoding, rank warping and option checks (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from densenas.arch import Decision
from densenas.result import Result
from densenas.space import TableSpace
from densenas.strategies import SurrogateSearch, build_strategy


def space() -> TableSpace:
    return TableSpace("toy", [Decision(f"d{i}", ("a", "b", "c")) for i in range(5)])


def reward(arch) -> float:
    return float(sum(v == "c" for _, v in arch.choices))


def warmed(n: int = 8, **kw) -> SurrogateSearch:
    s = SurrogateSearch(space(), seed=0, **kw)
    for _ in range(n):
        arch = s.propose()
        s.observe(arch, Result(reward=reward(arch)))
    return s


def test_encoding_is_one_hot_and_distance_is_twice_hamming():
    s = SurrogateSearch(space())
    rng = np.random.default_rng(0)
    a, b = s.space.sample(rng), s.space.sample(rng)
    x = s.encode([a, b])
    assert x.shape == (2, 15) and (x.sum(axis=1) == 5).all()
    hamming = sum(va != vb for (_, va), (_, vb) in zip(a.choices, b.choices))
    assert ((x[0] - x[1]) ** 2).sum() == 2 * hamming


def test_rank_warping_gives_normal_scores():
    s = SurrogateSearch(space())
    y = np.array([0.1, 100.0, 0.2, 0.2])
    expected = norm.ppf((np.array([1, 4, 2.5, 2.5]) - 0.5) / 4)
    assert np.allclose(s._transform(y), expected)
    assert np.allclose(SurrogateSearch(space(), y_transform="none")._transform(y), y)


def test_batch_proposals_are_distinct_unseen_and_pending():
    s = warmed()
    seen, before = set(s.seen), s.stats["model_proposals"]
    batch = s.propose_batch(4)
    assert len({a.key for a in batch}) == 4 and not ({a.key for a in batch} & seen)
    assert [a.key for a in s.pending] == [a.key for a in batch]
    assert s.stats["model_proposals"] == before + 4 and s.stats["fit_s"] > 0
    for arch in batch:
        s.observe(arch, Result(reward=reward(arch)))
    assert not s.pending


def test_failed_archs_get_the_worst_reward_and_are_never_proposed_again():
    s = warmed(6)
    bad = s.propose()
    s.observe(bad, Result.failed("diverged"))
    archs, y = s._targets()
    assert archs[-1] == bad and y[-1] == min(reward(a) for a, r in s.observed if r is not None)
    keys = [s.propose().key for _ in range(30)]
    assert bad.key not in keys and len(set(keys)) == 30


def test_all_failed_until_now_falls_back_to_random():
    s = SurrogateSearch(space(), seed=1)
    for _ in range(7):
        s.observe(s.propose(), Result.failed("boom"))
    assert s._targets()[0] == [] and s.propose() is not None and s.stats["model_proposals"] == 0


@pytest.mark.parametrize("kw", [{"model": "forest"}, {"acquisition": "ucb"}, {"acquisition": "ts"},
                                {"additive": False}])
def test_variants_learn_the_toy(kw):
    s = warmed(30, **kw)
    assert max(r for _, r in s.observed) >= 4.0  # random: P(>= 4 of 5 'c' in 30 draws) is about 0.4


@pytest.mark.parametrize("bad", [{"model": "mlp"}, {"acquisition": "pi"}, {"n_init": 0},
                                 {"y_transform": "log"}])
def test_bad_options_name_the_field(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        build_strategy({"type": "surrogate", **bad}, space())


def test_thompson_joint_draw_survives_a_singular_covariance_and_has_the_right_moments():
    """numpy's multivariate_normal (scikit-learn's sample_y) raised 'SVD did not converge' on near-singular
    pool covariances of a 24-decision space; the Cholesky draw with growing jitter must not, and must still
    draw N(mu, cov)."""
    from densenas.strategies.surrogate import joint_draw

    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 2))
    cov = a @ a.T  # rank 2 of 5: singular
    cov = np.vstack([cov, cov[-1]])  # a duplicated arch: a repeated row and column
    cov = np.hstack([cov, cov[:, -1:]])
    mu = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 4.0])  # the twins share their mean too
    draws = np.stack([joint_draw(mu, cov, rng) for _ in range(20_000)])
    assert np.isfinite(draws).all()
    assert np.allclose(draws[:, -1], draws[:, -2], atol=1e-3)  # the duplicate moves with its twin
    assert np.allclose(draws.mean(0), mu, atol=0.1)
    assert np.allclose(np.cov(draws.T), cov, atol=0.15 * np.abs(cov).max())
    bad = cov.copy()
    bad[0, 1] = np.nan  # no factorisation: independent marginals, still finite
    assert np.isfinite(joint_draw(mu, bad, rng)).all()
