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
from .promotion import PromotionCfg, mean_sd, noise_of, pick, standings

REWARD = "reward"



def _cell(metrics: dict, key: str, missing: str) -> str:
    """A metric column's cell: 4 decimals, or ``missing`` where the row has no such metric (a final rung's
    rows carry tools/test.py's metrics, not the search's)."""
    v = metrics.get(key)
    return missing if v is None else f"{float(v):.4f}"

def _plot(points: list[tuple[int, float | None, str]], path: Path, title: str, xlabel: str, ylabel: str,
          series: tuple[tuple[str, str, str], ...],
          rungs: dict[int, list[tuple[int, float, float]]] | None = None) -> Path:
    """Scatter of ``(x, reward or None for failed, series key)`` with the running best; ``rungs``: promoted
    rung -> ``(x, mean, s.d.)`` drawn as error bars (not part of the running best: longer budgets score on
    another scale)."""
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
    for (rung, pts), colour in zip(sorted((rungs or {}).items()), ("tab:green", "tab:purple", "tab:brown",
                                                                     "tab:pink")):
        xs, ys, sds = zip(*pts)
        ax.errorbar(xs, ys, yerr=sds, fmt="D", ms=5, c=colour, capsize=2,
                    label=f"rung {rung}: mean of seeds (promoted)")
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
    finished = history.finished()
    points = [(i, c.result.reward if c.result.ok else None, f"stage{c.result.stage}")
              for i, c in enumerate(finished, 1)]
    order = {c.id: i for i, c in enumerate(finished, 1)}
    by: dict[tuple[int, int], list[float]] = {}
    for r in history.rung_runs():
        if r.result.ok and r.candidate in order:
            by.setdefault((r.rung, r.candidate), []).append(float(r.result.reward))
    rungs: dict[int, list[tuple[int, float, float]]] = {}
    for (rung, cid), vals in sorted(by.items()):
        m, sd = mean_sd(vals)
        rungs.setdefault(rung, []).append((order[cid], m, sd or 0.0))
    return _plot(points, Path(path), title, "candidate", ylabel,
                 (("stage1", "tab:blue", "stopped after stage 1"), ("stage2", "tab:orange", "stopped after stage 2")),
                 rungs=rungs)


def write_reports(history: History, work_dir: str | Path, top: int = 10,
                  metrics: tuple[tuple[str, str], ...] = (), reward_label: str = REWARD,
                  front: tuple[str, str] | None = ("reward", "params"), limit: float | None = None,
                  promotion: PromotionCfg | None = None) -> dict[str, Path]:
    """Write ``best_arch.json``, ``leaderboard.md``, ``leaderboard.csv``, ``rewards.png`` and ``pareto.png``.

    ``metrics`` are the ``(key, column title)`` pairs shown next to the reward and ``reward_label`` the
    plot's y label; the search passes its task's ``report_metrics`` / ``reward_label``. ``front`` is the
    (maximised metric, minimised cost) pair whose Pareto front (:mod:`densenas.pareto`) the leaderboard
    marks (column ``front``, a ``*`` in the markdown) and ``pareto.png`` draws, with a hard cost ``limit``;
    ``None`` for no front. A history with steps (a supernet run) is reported per epoch, without a front.

    A search with promoted rungs (:mod:`densenas.promotion`) is ranked by its standings: the highest rung
    reached, then the mean reward over that rung's seeds; the leaderboard adds the rung, that score with
    its seed s.d. and a ``=`` for the candidates tied with the best within the seed noise, and
    ``best_arch.json`` is the final pick (the cheapest of the tied by ``promotion.cost``, else MAdds).
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
        runs = history.rung_runs()
        promo = promotion if promotion is not None else PromotionCfg()
        ranked = standings(history, promo.tie_z, runs)
        standing_of = {s.id: s for s in ranked}
        rows = [(f"#{s.id}", s.id, s.candidate.result, s.candidate.arch) for s in ranked]
        failed = [(f"#{c.id}", c.result) for c in history.finished() if not c.result.ok]
        final = pick(ranked, promo.cost) if runs else (ranked[0] if ranked else None)
        best = None if final is None else final.candidate
        best_info = None if final is None else {"candidate": final.id}
        if final is not None and runs:
            best_info.update(rung=final.rung, score=final.score, score_sd=final.sd, seeds=final.runs,
                             tied_with=[s.id for s in ranked if s.tied and s.id != final.id],
                             rung_metrics=final.metrics)
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
        promoted = not steps and bool(runs)
        rung_head = ["rung", "score", "score_sd", "seeds", "tied"] if promoted else []
        w.writerow(["rank", first_col, *rung_head, "reward", "stage", *(k for k, _ in metrics),
                    "params_M", "madds_G", *(["latency_ms"] * has_latency), "front", "wall_s", "arch"])
        for rank, (_, ident, r, arch) in enumerate(rows, 1):
            st = standing_of[ident] if promoted else None
            rung_cols = [st.rung, f"{st.score:.4f}", "" if st.sd is None else f"{st.sd:.4f}", st.runs,
                         int(st.tied)] if st is not None else []
            shown = st.metrics if st is not None else r.metrics
            w.writerow([rank, ident, *rung_cols, f"{r.reward:.4f}", r.stage, *(_cell(shown, k, "") for k, _ in
                        metrics), f"{r.cost.get('params', 0) / 1e6:.3f}", f"{r.cost.get('madds', 0) / 1e9:.3f}",
                        *([f"{r.cost.get('latency_ms', 0):.2f}"] * has_latency), int(ident in on_front),
                        f"{r.wall_time:.1f}", arch.key])
    titles = "".join(f" {t} |" for _, t in metrics)  # no metrics: no empty column
    head = "cand" if not steps else "epoch"
    rung_titles = "rung | score ± s.d. (seeds) | " if promoted else ""
    lat_title = " latency (ms) |" if has_latency else ""
    lines = [f"| rank | {head} | {rung_titles}reward | stage |{titles} params (M) | MAdds (G) |{lat_title}",
             "|---|---|" + "---|---|" * promoted + "---|---|" + "---|" * len(metrics) + "---|---|"
             + "---|" * has_latency]
    ties = promoted and sum(s.tied for s in ranked) > 1  # the best is always "tied": mark only real ties
    for rank, (label, ident, r, _) in enumerate(rows[:top], 1):
        st = standing_of[ident] if promoted else None
        shown = st.metrics if st is not None else r.metrics
        cols = "".join(f" {_cell(shown, k, '–')} |" for k, _ in metrics)
        label = f"{label} *" if ident in on_front else label
        rung_cols = ""
        if st is not None:
            label += " =" * (st.tied and st.rung > 0 and ties)
            label += " (pick)" * (ident == best_info["candidate"])
            sd = "" if st.sd is None else f" ± {st.sd:.4f}"
            rung_cols = f"{st.rung} | {st.score:.4f}{sd} ({st.runs}{f', {st.failed_runs} failed' * bool(st.failed_runs)}) | "
        lat = f" {r.cost['latency_ms']:.2f} |" if has_latency and "latency_ms" in r.cost else " – |" * has_latency
        lines.append(f"| {rank} | {label} | {rung_cols}{r.reward:.4f} | {r.stage} |{cols} "
                     f"{r.cost.get('params', 0) / 1e6:.3f} | {r.cost.get('madds', 0) / 1e9:.3f} |{lat}")
    rejected = [(label, r) for label, r in failed if r.over_limit]  # never trained, not in the budget
    failed = [(label, r) for label, r in failed if not r.over_limit]
    lines.append(f"\n{n - len(rejected)} {what} finished, {len(failed)} failed"
                 + (f", {len(rejected)} rejected over the hard limit (not trained, not counted)" if rejected else "")
                 + ".")
    if promoted:
        noise = noise_of(ranked)
        tied = [s for s in ranked if s.tied]
        lines.append(
            f"Promoted (densenas.promotion): rung r trains the best again at {promo.scale:g}^r x the iterations, "
            f"{promo.seeds} seed(s) each; `score` is the mean reward over the seeds of the highest rung reached "
            f"(rung 0: the search's own reward), metrics are that rung's means. "
            + (f"Rung {promo.rungs + 1} is the final rung: the model exported and fine-tuned by tools/train.py "
               f"for {promo.final_iters} iterations, `score` its tools/test.py {promo.final_metric[0]!r} "
               f"(densenas.promotion_final). " if promo.final_iters and promo.final_metric else "")
            + (f"Seed s.d. at rung {ranked[0].rung}: {noise:.4f}; `=`: tied with the best (within "
               f"{promo.tie_z:g} x s.d. x sqrt(1/n_best + 1/n)). " if noise is not None else
               "No seed noise known (seeds < 2): nothing is marked tied. ")
            + f"best_arch.json: #{best_info['candidate']}"
            + (f", the cheapest of the {len(tied)} tied" if len(tied) > 1 else ", the best") + ".")
    if on_front:
        lines.append(f"* on the Pareto front of {front[0]} (max) and {front[1]} (min): "
                     f"{', '.join(f'#{i}' for i in sorted(on_front))} (pareto.png; export one with "
                     f"tools/export.py {work_dir / 'history.sqlite'} --candidate ID)")
    for label, r in failed:
        lines.append(f"- {label} failed: {r.error}")
    if rejected:
        # "over the hard limit: <cost> <value> > <limit> (not trained)": the limit once, each value by its row
        parts = [r.error.split(": ", 1)[-1].replace(" (not trained)", "").split(" > ") for _, r in rejected]
        lines.append(f"- rejected over the hard limit ({parts[0][0].split()[0]} > {parts[0][-1]}): "
                     + ", ".join(f"{label} ({part[0].split()[-1]})" for (label, _), part in zip(rejected, parts)))
    out["md"] = work_dir / "leaderboard.md"
    out["md"].write_text("\n".join(lines) + "\n")
    if n:
        out["plot"] = plot_rewards(history, work_dir / "rewards.png", title=work_dir.name, ylabel=reward_label)
    return out
