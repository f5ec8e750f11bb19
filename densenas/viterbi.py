"""Viterbi decoding of a layered lattice: the most probable path through per-layer transition weights.

Used to decode the network-level path of Auto-DeepLab (Liu et al., CVPR 2019, sec. 3.3: "β can be
interpreted as the transition probability between different 'time steps' ... we use the classic Viterbi
algorithm to decode the path with the maximum probability") and the per-layer widths of IR-NAS
(Zhang et al., "Memory-Efficient Hierarchical Neural Architecture Search for Image Restoration").

A lattice has ``L`` nodes in sequence, each in one of ``S`` states (a stride, a width). ``log_init[s]``
scores the first node's state and ``log_trans[l][i, j]`` scores moving from state ``i`` at node ``l`` to
state ``j`` at node ``l + 1`` (``-inf`` forbids the move). The decoded path maximises the total score.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def viterbi(log_trans: Sequence[np.ndarray], log_init: np.ndarray | None = None) -> tuple[list[int], float]:
    """Highest-scoring state sequence of a lattice.

    Args:
        log_trans: ``L - 1`` arrays of shape ``(S, S)``; entry ``[i, j]`` is the log-probability (or any
            additive score) of going from state ``i`` to state ``j`` between consecutive nodes.
        log_init: shape ``(S,)`` score of each state at the first node (default: all zero).

    Returns:
        ``(states, score)``: the ``L`` state indices of the best path and its total score. Ties go to
        the lowest state index, so decoding is deterministic.

    Raises:
        ValueError: on inconsistent shapes, NaN scores, or when every path is forbidden (all ``-inf``).
    """
    trans = [np.asarray(t, dtype=np.float64) for t in log_trans]
    if log_init is None:
        if not trans:
            raise ValueError("viterbi: give log_init or at least one transition matrix")
        log_init = np.zeros(trans[0].shape[0])
    score = np.asarray(log_init, dtype=np.float64)
    if score.ndim != 1:
        raise ValueError(f"viterbi: log_init must be 1-D, got shape {score.shape}")
    n = score.shape[0]
    back: list[np.ndarray] = []
    for l, t in enumerate(trans):
        if t.shape != (n, n):
            raise ValueError(f"viterbi: log_trans[{l}] has shape {t.shape}, expected {(n, n)}")
        if np.isnan(t).any():
            raise ValueError(f"viterbi: log_trans[{l}] contains NaN")
        cand = score[:, None] + t  # [prev, next]
        back.append(np.argmax(cand, axis=0))  # first maximum: lowest previous state on ties
        score = cand[back[-1], np.arange(n)]
    if np.isnan(score).any() or not np.isfinite(score.max()):
        raise ValueError("viterbi: no allowed path through the lattice (all scores are -inf or NaN)")
    last = int(np.argmax(score))
    path = [last]
    for b in reversed(back):
        path.append(int(b[path[-1]]))
    path.reverse()
    return path, float(score[last])


def path_score(path: Sequence[int], log_trans: Sequence[np.ndarray], log_init: np.ndarray | None = None) -> float:
    """Total score of a given state sequence (the quantity :func:`viterbi` maximises)."""
    if len(path) != len(log_trans) + 1:
        raise ValueError(f"path_score: path has {len(path)} nodes, the lattice has {len(log_trans) + 1}")
    total = 0.0 if log_init is None else float(np.asarray(log_init)[path[0]])
    for l, t in enumerate(log_trans):
        total += float(np.asarray(t)[path[l], path[l + 1]])
    return total


def band_transitions(num_states: int, max_step: int = 1) -> np.ndarray:
    """Mask of allowed moves: ``0`` where ``|i - j| <= max_step``, ``-inf`` elsewhere.

    Auto-DeepLab moves at most one stride level per layer (down / same / up); IR-NAS at most one width
    level. Add the mask to log transition weights before decoding.
    """
    idx = np.arange(num_states)
    return np.where(np.abs(idx[:, None] - idx[None, :]) <= max_step, 0.0, -np.inf)
