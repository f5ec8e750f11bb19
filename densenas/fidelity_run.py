"""The proxy-fidelity run behind ``tools/fidelity.py``: K archs, each scored by the search's own cheap
evaluator and by a longer training (two seeds), one JSON row per arch so a killed run resumes.

Which cheap scores are compared (segmentation, Nekrasov et al., CVPR 2019, and any two-stage task):

* ``stage1``: the reward after stage 1 (candidate alone on cached encoder features);
* ``stage2``: the reward after the end-to-end stage 2;
* ``search``: what the search records with early stopping — the stage-1 reward for archs whose stage-1
  reward is below the running mean of the earlier archs', else the stage-2 reward
  (:func:`densenas.fidelity_stats.early_stop_replay`, replayed in the sampled order).

Every cheap score is measured with early stopping off (each arch gets both stages), at one or more
budgets (``cheap_scales``: multiples of the configured stage-1 and stage-2 iterations). The target is a
task metric (default: the task's first leaderboard metric, mIoU or AP) after ``long_mult`` times the
configured iterations, trained from scratch with seeds independent of the cheap run's.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .arch import Arch
from .evaluation.common import failure_reason
from .fidelity_stats import RankStats, early_stop_replay, rank_stats, scatter, verdict

LONG_SEED = 10_000  # long training j of arch i uses seed LONG_SEED * (j + 1) + i; the cheap run uses i
PLAN, ROWS = "fidelity_plan.json", "fidelity_rows"
PLAN_KEYS = ("archs", "long_iters", "long_stage2_iters", "seeds", "cheap_scales", "target", "stage1_iters",
             "stage2_iters")


def sample_archs(space: Any, k: int, seed: int) -> list[Arch]:
    """``k`` distinct random archs of ``space`` (its own sampler, as random search draws them)."""
    rng, archs, keys, tries = np.random.default_rng(seed), [], set(), 0
    while len(archs) < k:
        a = space.sample(rng)
        tries += 1
        if a.key not in keys:
            archs.append(a)
            keys.add(a.key)
        elif tries > 100 * k:
            raise ValueError(f"space {space.name} has fewer than {k} distinct archs (found {len(archs)})")
    return archs


def archs_from_history(path: str | Path, k: int) -> list[Arch]:
    """``k`` finished archs of a search history spread evenly over its reward ranks (best and worst
    included), so the check covers the range the search saw, not only its best."""
    from .history import History

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--from-history: no history file {path}")
    with History(path) as h:
        ok = [c for c in h.candidates("ok") if c.result is not None and c.result.reward is not None]
    if len(ok) < 3:
        raise ValueError(f"{path}: {len(ok)} finished candidates; need at least 3 to compare rankings")
    ok.sort(key=lambda c: (-c.result.reward, c.id))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ok) - 1, min(k, len(ok)))})
    return [ok[i].arch for i in picks]


def make_plan(archs: Sequence[Arch], proxy_cfg: Any, long_mult: float, seeds: int,
              cheap_scales: Sequence[float], target: str, source: str) -> dict[str, Any]:
    """Everything that defines the run's rows (checked again on resume)."""
    s1 = int(proxy_cfg.stage1.iters)
    s2 = 0 if proxy_cfg.stage2 is None else int(proxy_cfg.stage2.iters)
    if long_mult < 1:
        raise ValueError(f"--long-mult must be at least 1 (a longer training), got {long_mult}")
    if seeds not in (1, 2):
        raise ValueError(f"--seeds must be 1 or 2, got {seeds}")
    return {"archs": [a.to_dict() for a in archs], "long_iters": max(1, round(s1 * long_mult)),
            "long_stage2_iters": round(s2 * long_mult), "seeds": int(seeds),
            "cheap_scales": [float(x) for x in cheap_scales], "target": target, "stage1_iters": s1,
            "stage2_iters": s2, "source": source}


def open_plan(work_dir: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Write ``plan`` to a fresh work dir, or check it against the one already there (resume)."""
    path = work_dir / PLAN
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not a fidelity plan ({e}); remove it or choose another --work-dir") from None
        diff = [k for k in PLAN_KEYS if old.get(k) != plan.get(k)]
        if diff:
            raise ValueError(f"{path} holds a fidelity run with other settings ({', '.join(diff)} differ); "
                             f"choose another --work-dir or remove it")
        return old
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
    tmp.replace(path)
    return plan


def measure(evaluator: Any, arch: Arch, index: int, plan: dict[str, Any]) -> dict[str, Any]:
    """One arch's row: cheap rewards at every scale and the target after each long training.

    A failure (divergence, an exception) gives a row with ``error`` (left out of the statistics)."""
    target = plan["target"]
    base = dataclasses.replace(evaluator.cfg, early_stop=False, measure_cost=False)
    row: dict[str, Any] = {"index": index, "arch": arch.to_dict(), "cheap": {}, "long": []}
    try:
        evaluator.cfg = base
        for scale in plan["cheap_scales"]:
            r = evaluator.evaluate_at(arch, seed=index, scale=scale)  # both stages at scale x, no early stop
            if not r.ok:
                row["error"] = f"cheap evaluation at x{scale:g} failed: {r.error}"
                return row
            m = r.metrics
            row["cheap"][f"{scale:g}"] = {
                "stage1": m["stage1_reward"], "stage2": m.get("stage2_reward", m["stage1_reward"]),
                "target_stage1": m.get(f"stage1_{target}"), "target": m.get(target), "seconds": r.wall_time,
                # every scalar the evaluator reported, so the final report can rank each candidate reward
                "metrics": {k: float(v) for k, v in m.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        for j in range(plan["seeds"]):
            out = evaluator.train_longer(arch, plan["long_iters"], seed=LONG_SEED * (j + 1) + index,
                                         stage2_iters=plan["long_stage2_iters"])
            if target not in out:
                raise KeyError(f"target metric {target!r} is not among the task's metrics {sorted(out)}")
            row["long"].append({"target": out[target], "reward": out["reward"], "seconds": out["seconds"]})
    except KeyError as e:  # a wrong --target is the user's error, not the arch's: stop the run
        raise ValueError(str(e).strip("'\"")) from None
    except Exception as e:  # noqa: BLE001 - one bad arch must not end the run
        row["error"] = failure_reason(e)
    finally:
        evaluator.cfg = base
    return row


def run_rows(evaluator: Any, plan: dict[str, Any], rows_dir: Path, shard: tuple[int, int] = (0, 1),
             log: Callable[[str], None] = print) -> None:
    """Measure every arch of this shard that has no row yet; each row is written at once (atomically)."""
    rows_dir.mkdir(parents=True, exist_ok=True)
    k, n = shard
    todo = [i for i in range(len(plan["archs"])) if i % n == k and not (rows_dir / f"arch_{i:03d}.json").is_file()]
    if not todo:
        return
    log(f"{len(todo)} archs to measure in this run ({len(plan['archs'])} in all; rows in {rows_dir})")
    t0 = time.perf_counter()
    for done, i in enumerate(todo, 1):
        arch = Arch.from_dict(plan["archs"][i], source=f"{rows_dir.parent / PLAN} arch {i}")
        row = measure(evaluator, arch, i, plan)
        path = rows_dir / f"arch_{i:03d}.json"
        path.with_suffix(".tmp").write_text(json.dumps(row, indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)
        took = time.perf_counter() - t0
        eta = took / done * (len(todo) - done)
        if "error" in row:
            log(f"arch {i}: {row['error']}; left out ({took:.0f}s, eta {eta / 60:.0f} min)")
            continue
        c = row["cheap"][f"{plan['cheap_scales'][0]:g}"]
        longs = ", ".join(f"{x['target']:.4f}" for x in row["long"])
        log(f"arch {i} ({done}/{len(todo)}): stage-1 {c['stage1']:.4f} stage-2 {c['stage2']:.4f} | long "
            f"{plan['target']} {longs} ({took:.0f}s, eta {eta / 60:.0f} min)")


def load_rows(rows_dir: Path, n: int) -> list[dict[str, Any] | None]:
    """Row of every arch (``None`` where not measured yet)."""
    out = []
    for i in range(n):
        p = rows_dir / f"arch_{i:03d}.json"
        if not p.is_file():
            out.append(None)
            continue
        try:
            out.append(json.loads(p.read_text()))
        except ValueError as e:
            raise ValueError(f"{p}: unreadable row ({e}); delete it to measure that arch again") from None
    return out


def report(plan: dict[str, Any], rows: Sequence[dict[str, Any]], work_dir: Path, target_label: str,
           n_boot: int = 2000) -> tuple[str, dict[str, Any]]:
    """The text report, the summary (also written to ``fidelity.json``) and ``fidelity.png``."""
    ok = [r for r in rows if "error" not in r]
    if len(ok) < 3:
        raise ValueError(f"{len(ok)} archs measured without failure; need at least 3 to compare rankings")
    y = [r["long"][0]["target"] for r in ok]
    y2 = [r["long"][1]["target"] for r in ok] if plan["seeds"] > 1 else None
    ceiling = rank_stats(y2, y, n_boot=n_boot) if y2 is not None else None
    lines = [f"{len(ok)} archs ({len(rows) - len(ok)} failed); target: {plan['target']} after "
             f"{plan['long_iters']}+{plan['long_stage2_iters']} iterations (cheap: "
             f"{plan['stage1_iters']}+{plan['stage2_iters']} at x1)"]
    if ceiling is not None:
        lines.append(f"  noise ceiling (long seed 1 vs seed 2): {ceiling.line()}")
    summary: dict[str, Any] = {"n": len(ok), "failed": len(rows) - len(ok), "plan": {k: plan[k] for k in PLAN_KEYS
                                                                                    if k != "archs"},
                               "noise_ceiling": None if ceiling is None else dataclasses.asdict(ceiling),
                               "scales": {}}
    long_s = float(np.mean([x["seconds"] for r in ok for x in r["long"]]))
    panels, panel_stats, stopped = {}, {}, None
    for scale in plan["cheap_scales"]:
        key = f"{scale:g}"
        s1 = [r["cheap"][key]["stage1"] for r in ok]
        s2 = [r["cheap"][key]["stage2"] for r in ok]
        es, stop = early_stop_replay(s1, s2)
        scores = {"stage1": s1, "search": es} if plan["stage2_iters"] == 0 else \
            {"stage1": s1, "stage2": s2, "search": es}
        cheap_s = float(np.mean([r["cheap"][key]["seconds"] for r in ok]))
        lines.append(f"cheap x{key} ({round(plan['stage1_iters'] * scale)}+{round(plan['stage2_iters'] * scale)} "
                     f"iterations, {cheap_s:.1f}s per arch; long training {long_s / cheap_s:.1f}x that):")
        entry: dict[str, Any] = {"cheap_seconds": cheap_s, "cost_ratio": long_s / cheap_s, "stats": {}}
        for name, xs in scores.items():
            st = rank_stats(xs, y, n_boot=n_boot)
            entry["stats"][name] = dataclasses.asdict(st)
            lines.append(f"  {name:7s} vs long {plan['target']}: {st.line()}")
            if scale == plan["cheap_scales"][0]:
                panels[f"{name} x{key}"], panel_stats[f"{name} x{key}"] = xs, st
        if "stage2" in scores:
            top = set(np.argsort(-np.asarray(y), kind="stable")[:max(2, len(y) // 4)])
            lost = [i for i in top if stop[i]]
            entry["early_stop"] = {"stopped": int(sum(stop)), "top_stopped": len(lost), "top": len(top),
                                   "best_stopped": bool(stop[int(np.argmax(y))])}
            lines.append(f"  early stopping (replayed in sampled order) stops {sum(stop)}/{len(stop)} archs after "
                         f"stage 1, {len(lost)} of the {len(top)} best by long {plan['target']}"
                         f"{' (the best among them)' if stop[int(np.argmax(y))] else ''}")
            if scale == plan["cheap_scales"][0]:
                stopped = stop
        top_half = _top_half(es, y, y2, n_boot)
        if top_half:
            entry["top_half"] = top_half
            lines.append(f"  among the {top_half['n']} best by long {plan['target']}: search tau "
                         f"{top_half['tau']:+.2f}" + (f", noise ceiling {top_half['ceiling']:+.2f}"
                                                    if "ceiling" in top_half else "")
                         + " (what separates good archs from the best)")
        entry["verdict"] = verdict(entry_stats(entry, "search"), ceiling, f"the x{key} budget (search reward)")
        lines.append(f"  verdict: {entry['verdict']}")
        summary["scales"][key] = entry
    summary["long_seconds"] = long_s
    png = scatter(work_dir / "fidelity.png", y, y2, panels, panel_stats, f"{target_label} (long, seed 1)",
                  stopped=stopped, title=f"{len(ok)} archs; long training {plan['long_iters']}+"
                                         f"{plan['long_stage2_iters']} iterations")
    lines.append(f"plot: {png}")
    (work_dir / "fidelity.json").write_text(json.dumps(summary, indent=1) + "\n")
    return "\n".join(lines), summary


def _top_half(x: Sequence[float], y: Sequence[float], y2: Sequence[float] | None, n_boot: int
              ) -> dict[str, Any] | None:
    """Kendall tau of ``x`` against ``y`` (and of ``y2``) among the archs in the better half by ``y``: a
    search that already avoids the bad archs needs the cheap reward to rank these."""
    keep = np.argsort(-np.asarray(y), kind="stable")[:len(y) // 2]
    if len(keep) < 4:
        return None
    pick = lambda v: [v[i] for i in keep]  # noqa: E731
    out = {"n": len(keep), "tau": rank_stats(pick(x), pick(y), n_boot=n_boot).tau}
    if y2 is not None:
        out["ceiling"] = rank_stats(pick(y2), pick(y), n_boot=n_boot).tau
    return out


def entry_stats(entry: dict[str, Any], name: str) -> RankStats:
    d = dict(entry["stats"][name])
    d["tau_ci"], d["rho_ci"] = tuple(d["tau_ci"]), tuple(d["rho_ci"])
    return RankStats(**d)
