"""Search reports: reward-per-candidate plot, leaderboard (markdown + CSV) and best arch JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .history import History


SEG_METRICS = (("miou", "mIoU"), ("fwiou", "fwIoU"), ("pixel_acc", "pix.acc"))
SEG_REWARD = "reward (geo. mean of mIoU, fwIoU, pixel acc.)"


def plot_rewards(history: History, path: str | Path, title: str = "search", ylabel: str = SEG_REWARD) -> Path:
    """Scatter of reward per candidate (colour = stage reached, x = failed) with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = history.finished()
    fig, ax = plt.subplots(figsize=(7, 4))
    best, xs_best, ys_best = None, [], []
    for stage, colour in ((1, "tab:blue"), (2, "tab:orange")):
        pts = [(i, c.result.reward) for i, c in enumerate(cands, 1)
               if c.result.ok and c.result.stage == stage]
        if pts:
            ax.scatter(*zip(*pts), s=18, c=colour, label=f"stopped after stage {stage}")
    fails = [i for i, c in enumerate(cands, 1) if not c.result.ok]
    for i, c in enumerate(cands, 1):
        if c.result.ok and (best is None or c.result.reward > best):
            best = c.result.reward
        if best is not None:
            xs_best.append(i)
            ys_best.append(best)
    if xs_best:
        ax.step(xs_best, ys_best, where="post", c="k", lw=1, label="best so far")
    if fails:
        y0 = min(ys_best) if ys_best else 0.0
        ax.scatter(fails, [y0] * len(fails), marker="x", c="tab:red", label="failed")
    ax.set_xlabel("candidate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(history: History, work_dir: str | Path, top: int = 10,
                  metrics: tuple[tuple[str, str], ...] = SEG_METRICS, reward_label: str = SEG_REWARD
                  ) -> dict[str, Path]:
    """Write ``best_arch.json``, ``leaderboard.md``, ``leaderboard.csv`` and ``rewards.png``.

    ``metrics`` are the ``(key, column title)`` pairs shown next to the reward (segmentation by default;
    e.g. ``(("ap", "AP"), ("neg_loss", "-loss"))`` for detection).
    """
    work_dir = Path(work_dir)
    out: dict[str, Path] = {}
    best = history.best()
    if best is not None:
        out["best_arch"] = work_dir / "best_arch.json"
        data = best.arch.to_dict()
        data["result"] = {"candidate": best.id, "reward": best.result.reward,
                          "metrics": best.result.metrics, "cost": best.result.cost}
        out["best_arch"].write_text(json.dumps(data, indent=2) + "\n")
    rows = history.leaderboard(top=len(history.finished()))
    out["csv"] = work_dir / "leaderboard.csv"
    with open(out["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "candidate", "reward", "stage", *(k for k, _ in metrics),
                    "params_M", "madds_G", "wall_s", "arch"])
        for rank, c in enumerate(rows, 1):
            r = c.result
            w.writerow([rank, c.id, f"{r.reward:.4f}", r.stage, *(f"{r.metrics.get(k, 0):.4f}" for k, _ in
                        metrics), f"{r.cost.get('params', 0) / 1e6:.3f}",
                        f"{r.cost.get('madds', 0) / 1e9:.3f}", f"{r.wall_time:.1f}", c.arch.key])
    failed = [c for c in history.finished() if not c.result.ok]
    titles = " | ".join(t for _, t in metrics)
    lines = [f"| rank | cand | reward | stage | {titles} | params (M) | MAdds (G) |",
             "|---|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    for rank, c in enumerate(rows[:top], 1):
        r, m = c.result, c.result.metrics
        cols = " | ".join(f"{m.get(k, 0):.4f}" for k, _ in metrics)
        lines.append(f"| {rank} | #{c.id} | {r.reward:.4f} | {r.stage} | {cols} | "
                     f"{r.cost.get('params', 0) / 1e6:.3f} | {r.cost.get('madds', 0) / 1e9:.3f} |")
    lines.append(f"\n{len(history.finished())} candidates finished, {len(failed)} failed.")
    for c in failed:
        lines.append(f"- #{c.id} failed: {c.result.error}")
    out["md"] = work_dir / "leaderboard.md"
    out["md"].write_text("\n".join(lines) + "\n")
    if history.finished():
        out["plot"] = plot_rewards(history, work_dir / "rewards.png", title=work_dir.name,
                                   ylabel=reward_label)
    return out
