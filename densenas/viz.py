"""Search reports: reward plot, leaderboard (markdown + CSV) and best arch JSON.

A sampling search is reported per candidate; a one-shot (supernet, DARTS after Liu et al., ICLR 2019) run
per step (epoch) of its one candidate: ``best_arch.json`` is then the arch derived after the epoch whose
supernet scored best, and the leaderboard ranks the epochs.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from . import pareto
from .history import History

REWARD = "reward"


def _plot(points: list[tuple[int, float | None, str]], path: Path, title: str, xlabel: str, ylabel: str,
          series: tuple[tuple[str, str, str], ...]) -> Path:
    """Scatter of ``(x, reward or None for failed, series key)`` with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, colour, label in series:
        pts = [(x, y) for x, y, k in points if y is not None and k == key]
        if pts:
            ax.scatter(*zip(*pts), s=18, c=colour, label=label)
    best, xs_best, ys_best = None, [], []
    for x, y, _ in points:
        if y is not None and (best is None or y > best):
            best = y
        if best is not None:
            xs_best.append(x)
            ys_best.append(best)
    if xs_best:
        ax.step(xs_best, ys_best, where="post", c="k", lw=1, label="best so far")
    fails = [x for x, y, _ in points if y is None]
    if fails:
        y0 = min(ys_best) if ys_best else 0.0
        ax.scatter(fails, [y0] * len(fails), marker="x", c="tab:red", label="failed")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rewards(history: History, path: str | Path, title: str = "search", ylabel: str = REWARD) -> Path:
    """Reward per candidate (colour = stage reached, x = failed), or per epoch of a supernet run, with the
    running best."""
    steps = history.steps()
    if steps:
        points = [(s.step, s.result.reward if s.result.ok else None, "step") for s in steps]
        return _plot(points, Path(path), title, "epoch", ylabel,
                     (("step", "tab:blue", "supernet after epoch (val)"),))
    points = [(i, c.result.reward if c.result.ok else None, f"stage{c.result.stage}")
              for i, c in enumerate(history.finished(), 1)]
    return _plot(points, Path(path), title, "candidate", ylabel,
                 (("stage1", "tab:blue", "stopped after stage 1"), ("stage2", "tab:orange", "stopped after stage 2")))


def write_reports(history: History, work_dir: str | Path, top: int = 10,
                  metrics: tuple[tuple[str, str], ...] = (), reward_label: str = REWARD,
                  front: tuple[str, str] | None = ("reward", "params"), limit: float | None = None
                  ) -> dict[str, Path]:
    """Write ``best_arch.json``, ``leaderboard.md``, ``leaderboard.csv``, ``rewards.png`` and ``pareto.png``.

    ``metrics`` are the ``(key, column title)`` pairs shown next to the reward and ``reward_label`` the
    plot's y label; the search passes its task's ``report_metrics`` / ``reward_label``. ``front`` is the
    (maximised metric, minimised cost) pair whose Pareto front (:mod:`densenas.pareto`) the leaderboard
    marks (column ``front``, a ``*`` in the markdown) and ``pareto.png`` draws, with a hard cost ``limit``;
    ``None`` for no front. A history with steps (a supernet run) is reported per epoch, without a front.
    """
    work_dir = Path(work_dir)
    out: dict[str, Path] = {}
    steps = history.steps()
    # one row per ranked entry: (label, id, result, arch), best first
    if steps:
        what, first_col = "epochs", "epoch"
        ranked = sorted((s for s in steps if s.result.ok), key=lambda s: (-s.result.reward, s.step))
        rows = [(f"{s.step}", s.step, s.result, s.arch) for s in ranked]
        failed = [(f"epoch {s.step}", s.result) for s in steps if not s.result.ok]
        failed += [(f"#{c.id}", c.result) for c in history.finished() if not c.result.ok]
        best = history.best_step()
        best_info = None if best is None else {"candidate": best.candidate, "epoch": best.step}
        n = len(steps)
    else:
        what, first_col = "candidates", "candidate"
        rows = [(f"#{c.id}", c.id, c.result, c.arch) for c in history.leaderboard(top=len(history.finished()))]
        failed = [(f"#{c.id}", c.result) for c in history.finished() if not c.result.ok]
        best = history.best()
        best_info = None if best is None else {"candidate": best.id}
        n = len(history.finished())
    if best is not None:
        out["best_arch"] = work_dir / "best_arch.json"
        data = best.arch.to_dict()
        data["result"] = {**best_info, "reward": best.result.reward, "metrics": best.result.metrics,
                          "cost": best.result.cost}
        out["best_arch"].write_text(json.dumps(data, indent=2) + "\n")
    has_latency = any("latency_ms" in r.cost for _, _, r, _ in rows)
    on_front: set = set()
    if front is not None and not steps:
        pts = pareto.front([(ident, r) for _, ident, r, _ in rows], *front)
        on_front = {i for i, *_, f in pts if f}
        if pts:
            out["pareto"] = pareto.plot_front(pts, work_dir / "pareto.png", front[0], front[1], limit=limit,
                                              title=f"{work_dir.name}: {len(on_front)} of {len(pts)} on the front")
    out["csv"] = work_dir / "leaderboard.csv"
    with open(out["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", first_col, "reward", "stage", *(k for k, _ in metrics),
                    "params_M", "madds_G", *(["latency_ms"] * has_latency), "front", "wall_s", "arch"])
        for rank, (_, ident, r, arch) in enumerate(rows, 1):
            w.writerow([rank, ident, f"{r.reward:.4f}", r.stage, *(f"{r.metrics.get(k, 0):.4f}" for k, _ in
                        metrics), f"{r.cost.get('params', 0) / 1e6:.3f}", f"{r.cost.get('madds', 0) / 1e9:.3f}",
                        *([f"{r.cost.get('latency_ms', 0):.2f}"] * has_latency), int(ident in on_front),
                        f"{r.wall_time:.1f}", arch.key])
    titles = " | ".join(t for _, t in metrics)
    head = "cand" if not steps else "epoch"
    lines = [f"| rank | {head} | reward | stage | {titles} | params (M) | MAdds (G) |",
             "|---|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    for rank, (label, ident, r, _) in enumerate(rows[:top], 1):
        cols = " | ".join(f"{r.metrics.get(k, 0):.4f}" for k, _ in metrics)
        label = f"{label} *" if ident in on_front else label
        lines.append(f"| {rank} | {label} | {r.reward:.4f} | {r.stage} | {cols} | "
                     f"{r.cost.get('params', 0) / 1e6:.3f} | {r.cost.get('madds', 0) / 1e9:.3f} |")
    lines.append(f"\n{n} {what} finished, {len(failed)} failed.")
    if on_front:
        lines.append(f"* on the Pareto front of {front[0]} (max) and {front[1]} (min): "
                     f"{', '.join(f'#{i}' for i in sorted(on_front))} (pareto.png; export one with "
                     f"tools/export.py {work_dir / 'history.sqlite'} --candidate ID)")
    for label, r in failed:
        lines.append(f"- {label} failed: {r.error}")
    out["md"] = work_dir / "leaderboard.md"
    out["md"].write_text("\n".join(lines) + "\n")
    if n:
        out["plot"] = plot_rewards(history, work_dir / "rewards.png", title=work_dir.name, ylabel=reward_label)
    return out
