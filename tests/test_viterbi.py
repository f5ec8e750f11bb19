"""Viterbi decoding against brute-force enumeration on small lattices."""
import itertools

import numpy as np
import pytest

from densenas.viterbi import band_transitions, path_score, viterbi


def brute_force(log_trans, log_init):
    n = len(log_init)
    best, best_path = -np.inf, None
    for path in itertools.product(range(n), repeat=len(log_trans) + 1):
        s = path_score(path, log_trans, log_init)
        if s > best:
            best, best_path = s, list(path)
    return best_path, best


@pytest.mark.parametrize("seed", range(20))
def test_viterbi_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    states, layers = int(rng.integers(2, 5)), int(rng.integers(1, 6))
    mask = band_transitions(states, 1) if seed % 2 else np.zeros((states, states))
    trans = [np.log(rng.dirichlet(np.ones(states), size=states)) + mask for _ in range(layers)]
    init = np.log(rng.dirichlet(np.ones(states)))
    path, score = viterbi(trans, init)
    bf_path, bf_score = brute_force(trans, init)
    assert score == pytest.approx(bf_score)
    assert path_score(path, trans, init) == pytest.approx(bf_score)
    assert path == bf_path  # continuous random scores: the optimum is unique


def test_band_mask_is_respected_and_known_path():
    # three strides; transitions strongly prefer going "down" (to the next state) each layer
    t = np.log(np.full((3, 3), 0.01))
    for i in range(2):
        t[i, i + 1] = np.log(0.98)
    t[2, 2] = np.log(0.98)
    trans = [t + band_transitions(3)] * 3
    path, _ = viterbi(trans, np.log([1.0, 1e-9, 1e-9]))
    assert path == [0, 1, 2, 2]
    for a, b in zip(path, path[1:]):
        assert abs(a - b) <= 1


def test_viterbi_errors():
    with pytest.raises(ValueError, match=r"log_trans\[1\] has shape"):
        viterbi([np.zeros((2, 2)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="no allowed path"):
        viterbi([np.full((2, 2), -np.inf)])
    with pytest.raises(ValueError, match="NaN"):
        viterbi([np.array([[0.0, np.nan], [0.0, 0.0]])])
