"""Proxy fidelity: does a search's cheap reward rank architectures the way longer training does?

FastDenseNAS (Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models
via Auxiliary Cells", CVPR 2019) rests on the claim that its short two-stage proxy rewards "correlate well"
with results after longer training; NAS-FCOS (Wang et al., CVPR 2020) chose its detection reward by the
same test. Yu et al. ("Evaluating the Search Phase of Neural Architecture Search", ICLR 2020) made the
rank correlation between proxy and stand-alone scores the standard check. This module holds the
statistics of that check for :mod:`tools/fidelity.py`, for any task and space:

* Kendall's tau-b and Spearman's rho (``scipy.stats``) with percentile-bootstrap confidence intervals over
  the architectures;
* the *noise ceiling*: the same correlation between two seeds of the longer training — no cheap reward can
  rank archs by the long metric better than the long metric ranks them itself;
* top-k overlap and the regret of picking the cheap reward's best;
* a plain verdict with what to try next, and a scatter plot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class RankStats:
    """Rank agreement of a cheap score ``x`` with a target ``y`` over ``n`` archs.

    Attributes:
        n: archs compared.
        tau, tau_ci: Kendall's tau-b and its 95 % bootstrap interval.
        rho, rho_ci: Spearman's rho and its 95 % bootstrap interval.
        top_k: ``k`` of the top-k overlap.
        overlap: share of the ``k`` best archs by ``x`` that are among the ``k`` best by ``y``.
        regret: best ``y`` minus the ``y`` of the arch ``x`` ranks first (0: the cheap score picks the best).
    """

    n: int
    tau: float
    tau_ci: tuple[float, float]
    rho: float
    rho_ci: tuple[float, float]
    top_k: int
    overlap: float
    regret: float

    def line(self) -> str:
        """``tau +0.42 [+0.10, +0.70]  rho +0.55 [...]  top-4 overlap 3/4  regret 0.012``."""
        lo, hi = self.tau_ci
        rlo, rhi = self.rho_ci
        return (f"tau {self.tau:+.2f} [{lo:+.2f}, {hi:+.2f}]  rho {self.rho:+.2f} [{rlo:+.2f}, {rhi:+.2f}]  "
                f"top-{self.top_k} overlap {round(self.overlap * self.top_k)}/{self.top_k}  "
                f"regret {self.regret:.4f}")


def _check(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-d score lists of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) < 3:
        raise ValueError(f"need at least 3 archs to compare rankings, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite (leave failed archs out first)")
    return a, b


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (``nan`` when either list is constant)."""
    from scipy.stats import kendalltau

    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(kendalltau(x, y).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (``nan`` when either list is constant)."""
    from scipy.stats import spearmanr

    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def bootstrap_ci(x: np.ndarray, y: np.ndarray, fn, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn(x, y)`` over resampled (x, y) pairs.

    Written here rather than with ``scipy.stats.bootstrap``: with 10-20 archs many resamples repeat one
    arch so often that a list is constant and the statistic is undefined (``nan``); scipy then returns a
    ``nan`` interval, while dropping those resamples (reported nowhere else) gives the usual interval.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    idx = rng.integers(0, n, size=(n_boot, n))
    vals = np.array([fn(x[i], y[i]) for i in idx])
    vals = vals[np.isfinite(vals)]
    if len(vals) < n_boot // 2:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def rank_stats(x: Sequence[float], y: Sequence[float], top_k: int | None = None, n_boot: int = 2000,
               seed: int = 0) -> RankStats:
    """Agreement of cheap scores ``x`` with target scores ``y`` (higher is better for both).

    Args:
        x: cheap scores, one per arch.
        y: target scores (e.g. mIoU after longer training) of the same archs.
        top_k: ``k`` of the overlap (default: a quarter of the archs, at least 2).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Raises:
        ValueError: lists of different lengths, fewer than 3 archs, or a non-finite score.
    """
    a, b = _check(x, y)
    k = max(2, len(a) // 4) if top_k is None else max(1, min(int(top_k), len(a)))
    top_x, top_y = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return RankStats(n=len(a), tau=kendall(a, b), tau_ci=bootstrap_ci(a, b, kendall, n_boot, seed),
                     rho=spearman(a, b), rho_ci=bootstrap_ci(a, b, spearman, n_boot, seed + 1), top_k=k,
                     overlap=len(top_x & top_y) / k, regret=float(b.max() - b[int(np.argmax(a))]))


def verdict(stats: RankStats, ceiling: RankStats | None, what: str = "this budget") -> str:
    """A plain reading of ``stats`` against the noise ceiling, with what to try next."""
    lo = stats.tau_ci[0]
    if ceiling is not None and not ceiling.tau >= 0.3:
        return (f"cannot judge {what}: the longer training does not rank reliably itself (noise ceiling tau "
                f"{ceiling.tau:+.2f} between its two seeds); lengthen it (--long-mult) or enlarge the proxy "
                f"validation set (data.proxy.num_val) first")
    if not math.isfinite(stats.tau):
        return f"cannot judge {what}: one of the score lists is constant"
    share = "" if ceiling is None else f" ({stats.tau / ceiling.tau:.0%} of the noise ceiling {ceiling.tau:+.2f})"
    if lo > 0 and (ceiling is None or stats.tau >= 0.5 * ceiling.tau):
        return f"{what} ranks: tau {stats.tau:+.2f}{share}, its 95% interval above 0"
    if lo > 0:
        return (f"{what} ranks weakly: tau {stats.tau:+.2f}{share}; try a longer stage 1 "
                f"(evaluator.stage1.iters x2) or more validation images")
    if stats.tau > 0.1:
        return (f"inconclusive for {what}: tau {stats.tau:+.2f}{share} but its 95% interval "
                f"[{lo:+.2f}, {stats.tau_ci[1]:+.2f}] includes 0 with {stats.n} archs; add archs (--archs "
                f"{2 * stats.n}) or lengthen the cheap training")
    return (f"{what} does not rank: tau {stats.tau:+.2f}{share}; try a longer stage 1 (evaluator.stage1.iters "
            f"x2 or x4, --cheap-scales 2 4 measures it), more validation images, or another reward")


def early_stop_replay(stage1: Sequence[float], stage2: Sequence[float]) -> tuple[list[float], list[bool]]:
    """The reward a search with early stopping would have recorded for these archs in this order.

    The rule of Nekrasov et al. (as in :class:`densenas.evaluation.proxy.ProxyTrainer`): an arch whose
    stage-1 reward is below the mean of the earlier archs' stage-1 rewards keeps its stage-1 reward; the
    others get their stage-2 reward.

    Returns:
        (reward per arch, whether each arch was stopped after stage 1).
    """
    rewards, stopped, seen = [], [], []
    for r1, r2 in zip(stage1, stage2):
        stop = bool(seen) and r1 < sum(seen) / len(seen)
        seen.append(r1)
        rewards.append(r1 if stop else r2)
        stopped.append(stop)
    return rewards, stopped


def scatter(path: str | Path, target: Sequence[float], target2: Sequence[float] | None,
            panels: dict[str, Sequence[float]], stats: dict[str, RankStats], target_label: str,
            stopped: Sequence[bool] | None = None, title: str = "") -> Path:
    """One panel per cheap score: cheap score (x) against the target (y), the second seed's target as a
    vertical bar; archs early stopping would have stopped after stage 1 drawn hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(target, dtype=float)
    y2 = None if target2 is None else np.asarray(target2, dtype=float)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, xs) in zip(axes[0], panels.items()):
        x = np.asarray(xs, dtype=float)
        if y2 is not None:
            ax.vlines(x, np.minimum(y, y2), np.maximum(y, y2), colors="0.7", lw=1, label="two long seeds")
        yy = y  # the statistics rank by the first long seed; the bar reaches the second
        hollow = np.asarray(stopped if stopped is not None else [False] * len(x), dtype=bool)
        ax.scatter(x[~hollow], yy[~hollow], s=24, c="C0", label="reached stage 2" if stopped else None)
        if hollow.any():
            ax.scatter(x[hollow], yy[hollow], s=24, facecolors="none", edgecolors="C3",
                       label="stopped after stage 1")
        s = stats.get(name)
        ax.set_title(f"{name}: tau {s.tau:+.2f}" if s else name, fontsize=9)
        ax.set_xlabel(name)
        ax.set_ylabel(target_label)
        if ax is axes[0][0]:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
