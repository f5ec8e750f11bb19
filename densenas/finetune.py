"""A model fine-tuned the way a user gets it: ``tools/export.py`` → ``tools/train.py`` → ``tools/test.py``.

One runner for everything that compares exported models (``tools/fidelity.py --final-iters``,
``benchmarks/transfer.py``, ``benchmarks/found_vs_baselines.py``). The tools run as subprocesses, exactly
the commands a user types, each run's output appended to its ``run.log``; a finished run leaves
``test.json`` (written atomically), so an interrupted comparison resumes and trains only what is missing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "sh", "fine_tune", "headline", "arch_folder", "fine_tune_arch", "jobs_env"]


def jobs_env(jobs: int) -> dict[str, str] | None:
    """The environment of ``jobs`` fine-tunes side by side: ``OMP_NUM_THREADS`` = CPU cores // ``jobs``, unless
    this process's environment sets it (``None``: one at a time, or the user's setting, nothing to add)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}


def sh(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
    """Run ``cmd`` from the repository root, its output appended to ``log``.

    Args:
        cmd: the command.
        log: its output, appended.
        env: variables set for the command on top of this process's environment.

    Raises:
        RuntimeError: a non-zero exit, naming the command, the log and its last lines.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(list(cmd), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                            env=None if not env else {**os.environ, **env}).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {rc}); see {log}:\n{tail}")


# Fine-tunes of one exported config may run in threads side by side (tools/fidelity.py --final-jobs): the
# first exports it, the others wait for that config only.
_EXPORT_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _export_lock(config: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _EXPORT_LOCKS.setdefault(Path(config).resolve(), threading.Lock())


def fine_tune(export_args: Sequence[str], config: Path, run: Path, seed: int, keep_checkpoints: bool = True,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Export (once, to ``config``), fine-tune with ``seed`` in ``run`` and test the last checkpoint.

    Args:
        export_args: ``tools/export.py`` arguments except ``--out`` (the arch JSON or ``--baseline``, ...).
        config: the exported config (written unless it exists).
        run: the work dir of this fine-tune; ``run/test.json`` holds the result.
        seed: ``randomness.seed`` of the fine-tune.
        keep_checkpoints: ``False`` deletes the run's ``*.pth`` once tested (only the figures are kept).
        env: variables set for the three tools (e.g. ``OMP_NUM_THREADS`` when fine-tunes share the CPU).

    Returns:
        ``tools/test.py``'s JSON (``metrics``, ``params``, ``madds``, ...) plus ``train_seconds``; read
        from ``run/test.json`` when the run finished earlier.
    """
    result = run / "test.json"
    if result.is_file():
        return json.loads(result.read_text())
    run.mkdir(parents=True, exist_ok=True)
    log, py = run / "run.log", sys.executable
    with _export_lock(config):
        if not config.is_file():
            sh([py, "tools/export.py", *export_args, "--out", str(config)], log, env)
    t0 = time.perf_counter()
    sh([py, "tools/train.py", str(config), "--work-dir", str(run), "--cfg-options", f"randomness.seed={seed}"], log,
       env)
    seconds = time.perf_counter() - t0
    last = (run / "last_checkpoint").read_text().strip()  # mmengine's pointer to the newest checkpoint
    tmp = run / "test.tmp.json"
    sh([py, "tools/test.py", str(config), last, "--work-dir", str(run), "--json", str(tmp)], log, env)
    data = json.loads(tmp.read_text())
    data["train_seconds"] = seconds
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(result)
    if not keep_checkpoints:
        for ckpt in run.glob("*.pth"):
            ckpt.unlink()
    return data


def headline(metrics: dict[str, Any], pattern: str, higher_better: bool = True) -> float | None:
    """The first numeric metric whose lower-cased key matches ``pattern`` (negated when lower is better)."""
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and re.search(pattern, key.lower()):
            return float(value) if higher_better else -float(value)
    return None


def arch_folder(arch: Any, folder: Path, search_config: Path) -> Path:
    """``folder`` with ``arch.json`` and a copy of the search's resolved ``config.py`` next to it (what
    ``tools/export.py`` reads the task, classes, data, backbone and width of the search from); returns the
    arch JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    arch.save(folder / "arch.json")
    (folder / "config.py").write_text(Path(search_config).read_text())
    return folder / "arch.json"


def fine_tune_arch(arch_json: Path, *, iters: int, export_args: Sequence[str], seed: int,
                   metric: tuple[str, bool], env: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """:func:`fine_tune` of an arch prepared by :func:`arch_folder` (config ``finetune.py`` and run
    ``seed<seed>`` in its folder, checkpoints deleted once tested) and its headline ``metric``; ``env`` as
    for :func:`fine_tune`.

    Returns:
        ``(headline value, tools/test.py's JSON)``; the value is negated when lower is better.

    Raises:
        RuntimeError: a tool failed (names the command and its log); ValueError: no metric matches.
    """
    folder = arch_json.parent
    data = fine_tune([str(arch_json), "--iters", str(iters), *export_args], folder / "finetune.py",
                     folder / f"seed{seed}", seed, keep_checkpoints=False, env=env)
    value = headline(data["metrics"], *metric)
    if value is None:
        raise ValueError(f"no metric matching {metric[0]!r} among {sorted(data['metrics'])} "
                         f"({folder / f'seed{seed}' / 'test.json'})")
    return value, data
