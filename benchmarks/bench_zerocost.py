#!/usr/bin/env python
"""Do zero-cost scores of untrained candidates rank a real search's candidates like their measured rewards?

Zero-cost proxies (:mod:`densenas.zerocost`): NASWOT (Mellor et al., "Neural Architecture Search without
Training", ICML 2021), synflow (Tanaka et al., "Pruning neural networks without any data by iteratively
conserving synaptic flow", NeurIPS 2020, as a NAS proxy in Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021) and Zen-score (Lin et al., "Zen-NAS", ICCV 2021). For every finished
candidate of each search history given, the evaluator is built from the search's own config
(``<work_dir>/config.py`` next to ``history.sqlite``) through :func:`densenas.build.build_search` with the
search's work dir, so the encoder features and the teacher come from its cache exactly as the search used
them; :meth:`ProxyTrainer.zero_cost` builds the real candidate (with the initial weights it was trained
from: the candidate's own seed unless ``--seed``) and scores it on the real cached features of a batch of
training images.

Printed per history: Kendall tau and Spearman rho (scipy) with a bootstrap 95 % CI over candidates
(numpy) against the measured reward, the same against the stage-1 reward (every candidate has one; the
reward of a candidate that passed the early stop is its stage-2 reward, which is not comparable), seconds
per score, and the parameter count (the history's ``cost``) as the baseline proxy every zero-cost score
must beat. Failed candidates (no reward) are left out.

    python benchmarks/bench_zerocost.py work_dirs/auxcell_proxy work_dirs/auxcell_lite0_proxy
        [--proxies naswot synflow zen] [--resamples 2000] [--batch-size 32] [--seed S] [--out zc.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def correlations(x: np.ndarray, y: np.ndarray, resamples: int, seed: int = 0) -> dict[str, float]:
    """Kendall tau and Spearman rho of ``x`` vs ``y`` with percentile-bootstrap 95 % intervals (the statistics
    of ``tools/fidelity.py``, :func:`densenas.fidelity_stats.rank_stats`)."""
    from densenas.fidelity_stats import rank_stats

    st = rank_stats(x, y, n_boot=resamples, seed=seed)
    return {"tau": st.tau, "tau_lo": st.tau_ci[0], "tau_hi": st.tau_ci[1],
            "rho": st.rho, "rho_lo": st.rho_ci[0], "rho_hi": st.rho_ci[1]}


def score_history(path: Path, proxies: list[str], batch_size: int, seed: int | None) -> tuple[str, list[dict]]:
    """Every finished, successful candidate of the history at ``path``: rewards, params and zero-cost scores
    (with the seconds each took). Returns (a description of the search, the rows)."""
    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.history import History

    work_dir = path.parent if path.suffix == ".sqlite" else path
    cfg = load_config(work_dir / "config.py")
    search = build_search(cfg, work_dir=work_dir, log=lambda s: None)
    with History(work_dir / "history.sqlite") as h:
        done = h.finished()
    rows = []
    for c in done:
        if not c.result.ok:
            continue
        row = {"id": c.id, "reward": c.result.reward, "stage": c.result.stage, "params": c.result.cost.get("params"),
               "stage1_reward": c.result.metrics.get("stage1_reward"), "scores": {}, "seconds": {}}
        for m in proxies:
            t0 = time.perf_counter()
            row["scores"][m] = search.evaluator.zero_cost(c.arch, m, seed=c.seed if seed is None else seed,
                                                         batch_size=batch_size)
            row["seconds"][m] = time.perf_counter() - t0
        rows.append(row)
    what = (f"{work_dir}: backbone {cfg.backbone.type}, space {search.space.name}, {len(rows)} of {len(done)} "
            f"finished candidates have a reward")
    return what, rows


def print_table(what: str, rows: list[dict], proxies: list[str], resamples: int) -> dict[str, dict]:
    """One line per proxy (and the params baseline): tau / rho vs reward and vs stage-1 reward."""
    reward = np.array([r["reward"] for r in rows])
    stage1 = np.array([r["stage1_reward"] for r in rows])
    columns = {m: (np.array([r["scores"][m] for r in rows]), np.mean([r["seconds"][m] for r in rows]))
               for m in proxies}
    columns["#params"] = (np.array([r["params"] for r in rows]), float("nan"))
    print(f"\n{what}")
    print(f"{'proxy':<9} {'s/score':>7}  {'tau vs reward [95% CI]':<25} {'rho vs reward [95% CI]':<25} "
          f"{'tau vs stage-1 [95% CI]':<25} {'rho vs stage-1 [95% CI]':<25}")
    stats = {}
    for name, (x, sec) in columns.items():
        r, s1 = correlations(x, reward, resamples), correlations(x, stage1, resamples)
        cells = [f"{d[k]:+.2f} [{d[k + '_lo']:+.2f}, {d[k + '_hi']:+.2f}]" for d in (r, s1) for k in ("tau", "rho")]
        print(f"{name:<9} {'history' if np.isnan(sec) else f'{sec:.2f}':>7}  " + " ".join(f"{c:<25}" for c in cells))
        stats[name] = {"seconds": sec, "reward": r, "stage1_reward": s1}
    return stats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("histories", nargs="+", metavar="HISTORY", help="a search's work dir or its history.sqlite")
    p.add_argument("--proxies", nargs="+", default=["naswot", "synflow", "zen"])
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the candidates")
    p.add_argument("--batch-size", type=int, default=32, help="training images the scores see")
    p.add_argument("--seed", type=int, default=None, help="one init seed for all (default: each candidate's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", help="also write every candidate's scores and the statistics to this JSON file")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    report = {}
    for h in args.histories:
        what, rows = score_history(Path(h), args.proxies, args.batch_size, args.seed)
        report[h] = {"rows": rows, "stats": print_table(what, rows, args.proxies, args.resamples)}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
