"""The "final" target of ``tools/fidelity.py``: each arch exported and fine-tuned the way a user gets it.

A proxy reward is only useful if it ranks the model the user will train. The long proxy training of
:mod:`densenas.fidelity_run` is still the proxy; this target is the real thing: for every arch of the
fidelity plan, ``tools/export.py`` writes its OpenMMLab config (from the search's own resolved config, so
classes, backbone and width are as searched), ``tools/train.py`` fine-tunes it with the ordinary mmengine
recipe once per seed (``randomness.seed``) and ``tools/test.py`` scores the last checkpoint. The headline
metric is the task's :attr:`~densenas.task.Task.test_metric` (mIoU, bbox mAP, RMSE, ...), sign-flipped when
lower is better so that higher always ranks first.

The tools run as subprocesses through :func:`densenas.finetune.fine_tune`, exactly the commands a user types
(a ``run.log`` per run); every finished run leaves ``test.json``, so a killed measurement resumes with the
same command and trains only what is missing. Checkpoints are deleted once tested. ``--final-jobs N`` runs N
fine-tunes side by side (N GPUs' worth of work on one GPU, or the cores of a CPU machine shared out).
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from .arch import Arch
from .fidelity_stats import early_stop_replay, rank_stats
from .finetune import arch_folder, fine_tune_arch, jobs_env

FINAL = "fidelity_final"
FINAL_SEED = 20_000  # fine-tune j of arch i uses seed FINAL_SEED * (j + 1) + i (apart from the proxy's)

__all__ = ["FINAL", "final_rows", "load_final", "final_report", "metric_scores"]


def final_rows(plan: dict[str, Any], work_dir: Path, search_config: Path, *, iters: int, seeds: int,
               metric: tuple[str, bool], export_args: Sequence[str] = (), shard: tuple[int, int] = (0, 1),
               jobs: int = 1, log: Callable[[str], None] = print) -> None:
    """Fine-tune every arch of this shard whose final row is missing; one row per arch, written at once.

    Args:
        plan: the fidelity plan (its ``archs``).
        work_dir: the fidelity work dir (rows go to ``<work_dir>/fidelity_final/``).
        search_config: the resolved search config, copied next to each arch as ``config.py`` (what
            ``tools/export.py`` reads the task, classes, backbone and width from).
        iters: fine-tuning iterations (``tools/export.py --iters``).
        seeds: fine-tunes per arch.
        metric: the task's ``test_metric``.
        export_args: more ``tools/export.py`` options (e.g. ``--crop 128``).
        shard: ``(k, n)``: only archs ``i`` with ``i % n == k``.
        jobs: fine-tunes run side by side (each a process of its own). With more than one, each gets
            ``OMP_NUM_THREADS`` = CPU cores // ``jobs`` unless the environment sets it.
        log: progress lines.
    """
    rows = work_dir / FINAL
    rows.mkdir(parents=True, exist_ok=True)
    k, n = shard
    todo = [i for i in range(len(plan["archs"])) if i % n == k and not (rows / f"arch_{i:03d}.json").is_file()]
    if not todo:
        return
    env = jobs_env(jobs)
    log(f"final target: {len(todo)} archs to export and fine-tune ({iters} iterations x {seeds} seed(s) each, "
        f"tools/train.py" + (f", {jobs} at a time" if jobs > 1 else "") + f"; runs in {rows})")
    t0 = time.perf_counter()
    archs = {i: Arch.from_dict(plan["archs"][i], source=f"fidelity plan arch {i}") for i in todo}
    folders = {i: arch_folder(a, rows / f"arch_{i:03d}", search_config) for i, a in archs.items()}

    def one(i: int, j: int) -> tuple[float, dict[str, Any]]:
        return fine_tune_arch(folders[i], iters=iters, export_args=export_args, seed=FINAL_SEED * (j + 1) + i,
                              metric=metric, env=env)

    # Threads only wait on the tools' processes; a row is written as soon as all seeds of its arch are done.
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {i: [pool.submit(one, i, j) for j in range(seeds)] for i in todo}
        for done, i in enumerate(todo, 1):
            row: dict[str, Any] = {"index": i, "arch": archs[i].to_dict(), "final": []}
            for fut in futures[i]:
                try:
                    value, data = fut.result()
                except RuntimeError as e:  # a config that cannot be exported or trained: that arch is left out
                    row.setdefault("error", str(e).splitlines()[0])
                    continue
                row["final"].append({"target": value, "seconds": data.get("train_seconds", 0.0),
                                     "params": data.get("params"), "madds": data.get("madds")})
            if "error" in row:
                row["final"] = []
            path = rows / f"arch_{i:03d}.json"
            path.with_suffix(".tmp").write_text(json.dumps(row, indent=1) + "\n")
            path.with_suffix(".tmp").replace(path)
            took = time.perf_counter() - t0
            what = row.get("error") or ", ".join(f"{x['target']:.4f}" for x in row["final"])
            log(f"final arch {i} ({done}/{len(todo)}): {what} ({took:.0f}s, eta "
                f"{took / done * (len(todo) - done) / 60:.0f} min)")


def metric_scores(cheap: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Each scalar metric every cheap row recorded, as a higher-is-better score per arch.

    Losses (a name containing ``loss``) are negated and named ``-<name>``, the way a negative-loss reward
    ranks, except those already negated (``neg_loss``, ``stage1_neg_loss``: the detection task's reward,
    higher is better as recorded); constant columns (nothing to rank) and rows from before metrics were
    recorded are left out.
    """
    if not cheap or any("metrics" not in c for c in cheap):
        return {}
    names = sorted(set.intersection(*(set(c["metrics"]) for c in cheap)))
    out: dict[str, list[float]] = {}
    for n in names:
        xs = [float(c["metrics"][n]) for c in cheap]
        if len(set(xs)) < 2:
            continue
        if "loss" in n and not re.search(r"(^|_)neg_", n):
            out[f"-{n}"] = [-x for x in xs]
        else:
            out[n] = xs
    return out


def load_final(work_dir: Path, n: int) -> list[dict[str, Any] | None]:
    """The final row of every arch (``None`` where not measured yet)."""
    out = []
    for i in range(n):
        p = Path(work_dir) / FINAL / f"arch_{i:03d}.json"
        try:
            out.append(json.loads(p.read_text()) if p.is_file() else None)
        except ValueError as e:
            raise ValueError(f"{p}: unreadable row ({e}); delete it to fine-tune that arch again") from None
    return out


def final_report(plan: dict[str, Any], rows: Sequence[dict[str, Any] | None], finals: Sequence[dict[str, Any] | None],
                 label: str, n_boot: int = 2000) -> tuple[list[str], dict[str, Any]]:
    """Kendall tau (95 % bootstrap interval) of every cheap score and of the long proxy training against the
    fine-tuned metric (mean over its seeds), and the final noise ceiling (fine-tune seed 1 against seed 2).

    Only archs with a proxy row and a final row, neither failed, count (``None`` rows are still to measure).
    """
    pairs = [(r, f) for r, f in zip(rows, finals) if r is not None and f is not None and "error" not in r
             and "error" not in f and f["final"]]
    summary: dict[str, Any] = {"n": len(pairs)}
    if len(pairs) < 3:
        return [f"final target: {len(pairs)} archs measured; need at least 3 to compare rankings"], summary
    y = [sum(x["target"] for x in f["final"]) / len(f["final"]) for _, f in pairs]
    seeds = min(len(f["final"]) for _, f in pairs)
    iters = plan.get("final_iters")
    lines = [f"final target: {label} of the exported model fine-tuned by tools/train.py"
             + (f" ({iters} iterations)" if iters else "") + f", mean of {seeds} seed(s), {len(pairs)} archs:"]
    if seeds >= 2:
        ceiling = rank_stats([f["final"][1]["target"] for _, f in pairs], [f["final"][0]["target"] for _, f in pairs],
                             n_boot=n_boot)
        summary["noise_ceiling"] = ceiling.tau
        summary["noise_ceiling_ci"] = list(ceiling.tau_ci)
        lines.append(f"  noise ceiling (fine-tune seed 1 vs seed 2): {ceiling.line()}")
    key = f"{plan['cheap_scales'][0]:g}"
    s1 = [r["cheap"][key]["stage1"] for r, _ in pairs]
    s2 = [r["cheap"][key]["stage2"] for r, _ in pairs]
    scores = {f"stage1 x{key}": s1, f"stage2 x{key}": s2, f"search x{key}": early_stop_replay(s1, s2)[0],
              "long proxy": [sum(x["target"] for x in r["long"]) / len(r["long"]) for r, _ in pairs]}
    summary["tau"] = {}
    for name, xs in scores.items():
        st = rank_stats(xs, y, n_boot=n_boot)
        summary["tau"][name] = {"tau": st.tau, "tau_ci": list(st.tau_ci), "rho": st.rho}
        lines.append(f"  {name:13s} vs final: {st.line()}")
    per_metric = metric_scores([r["cheap"][key] for r, _ in pairs])
    if per_metric:
        # which of the task's cheap metrics, used as the reward, would rank the fine-tuned model best
        lines.append(f"  each cheap metric at x{key} as the reward (what task.reward could be):")
        summary["tau_metric"] = {}
        for name, xs in per_metric.items():
            st = rank_stats(xs, y, n_boot=n_boot)
            summary["tau_metric"][name] = {"tau": st.tau, "tau_ci": list(st.tau_ci), "rho": st.rho}
            lines.append(f"    {name:22s} vs final: {st.line()}")
    summary["fine_tune_seconds"] = sum(x["seconds"] for _, f in pairs for x in f["final"]) / sum(
        len(f["final"]) for _, f in pairs)
    return lines, summary
