"""The Pareto front of a search: candidates no other candidate beats on both the metric and a cost.

Compact-model searches trade accuracy against size and speed (MnasNet, Tan et al., CVPR 2019; Nekrasov et
al., "Template-Based Automatic Search of Compact Semantic Segmentation Architectures", WACV 2020): the
answer is not one arch but the front of non-dominated ones. Every proxy search records its candidates'
metric and costs (``Result.metrics``, ``Result.cost``); this module marks the front in the leaderboard and
plots metric against cost with the front drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

SENSES = ("max", "min")


def non_dominated(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[bool]:
    """Which points are on the Pareto front.

    A point is dominated when another is at least as good in every objective and strictly better in one;
    equal points are all kept. Written here (a pairwise comparison, fine for the hundreds of candidates of
    a search) because Optuna's own front computation is private API and pymoo is not in the stack.

    Args:
        points: one tuple of objective values per point.
        senses: ``"max"`` or ``"min"`` per objective.

    Raises:
        ValueError: an unknown sense, or a point with another number of values.
    """
    if any(s not in SENSES for s in senses):
        raise ValueError(f"senses must be 'max' or 'min', got {list(senses)}")
    sign = [1.0 if s == "max" else -1.0 for s in senses]
    vals = []
    for p in points:
        if len(p) != len(senses):
            raise ValueError(f"point {tuple(p)} has {len(p)} values for {len(senses)} objectives")
        vals.append([g * float(v) for g, v in zip(sign, p)])
    out = []
    for i, a in enumerate(vals):
        dominated = any(all(b[k] >= a[k] for k in range(len(a))) and any(b[k] > a[k] for k in range(len(a)))
                        for j, b in enumerate(vals) if j != i)
        out.append(not dominated)
    return out


def metric_of(result: Any, key: str) -> float | None:
    """``key`` of a finished result: ``"reward"``, a metric or a cost (``None`` when absent)."""
    if key == "reward":
        return result.reward
    if key in result.metrics:
        return float(result.metrics[key])
    if key in result.cost:
        return float(result.cost[key])
    return None


def front(entries: Sequence[tuple[Any, Any]], metric: str = "reward", cost: str = "params"
          ) -> list[tuple[Any, float, float, bool]]:
    """``(id, metric, cost, on_front)`` for every ok entry that has both values, in the given order.

    Args:
        entries: ``(id, Result)`` pairs (failed ones are left out).
        metric: maximised key (``reward`` or a metric).
        cost: minimised key (a cost such as ``params``, ``madds``, ``latency_ms``).
    """
    pts = []
    for ident, r in entries:
        if r is None or not r.ok:
            continue
        m, c = metric_of(r, metric), metric_of(r, cost)
        if m is not None and c is not None:
            pts.append((ident, m, c))
    flags = non_dominated([(m, c) for _, m, c in pts], ("max", "min"))
    return [(i, m, c, f) for (i, m, c), f in zip(pts, flags)]


def plot_front(points: Sequence[tuple[Any, float, float, bool]], path: str | Path, metric_label: str,
               cost_label: str, title: str = "", limit: float | None = None) -> Path:
    """Metric (y) against cost (x) of every candidate, the front joined by a step line and labelled with the
    candidates' ids; ``limit`` draws a hard cost limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rest = [(c, m) for _, m, c, f in points if not f]
    on = sorted((c, m, i) for i, m, c, f in points if f)
    if rest:
        ax.scatter(*zip(*rest), s=16, c="0.6", label="dominated")
    if on:
        xs, ys, ids = zip(*on)
        ax.step(xs, ys, where="post", c="tab:red", lw=1)
        ax.scatter(xs, ys, s=28, c="tab:red", label="Pareto front", zorder=3)
        for x, y, i in on:
            ax.annotate(f"#{i}", (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    if limit is not None:
        ax.axvline(limit, c="k", ls="--", lw=1, label="hard limit")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(metric_label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
