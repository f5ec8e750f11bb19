"""The search loop of differentiable spaces: train the supernet epoch by epoch, derive, score, record.

DARTS (Liu, Simonyan, Yang, ICLR 2019) and Auto-DeepLab (Liu et al., CVPR 2019) replace the
"strategy proposes, evaluator trains" loop of :mod:`densenas.search` by one supernet training. This
module gives it the same outputs: after every epoch the architecture ``derive()`` decodes is recorded in
the :class:`~densenas.history.History` as a finished candidate (arch, reward of the supernet on the
validation split, metrics incl. the epoch's losses, ``stage`` = epoch number, wall time), so reports,
``best_arch.json`` and export work unchanged; progress is reported with
:func:`densenas.search.progress_line`.

Resume: after every epoch the trainer state and the epoch's record are written atomically (temporary file
+ ``os.replace``) to ``<work_dir>/supernet.pth`` *before* the history row, so a process killed at any
instant resumes from the last finished epoch, writes a row the kill prevented, and never trains or records
an epoch twice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..arch import Arch
from ..history import History
from ..search import Progress
from ..strategies.darts import DartsCfg, DartsTrainer, Split
from ..supernet import DifferentiableSpace, Supernet
from ..result import Result

CHECKPOINT = "supernet.pth"
DERIVED = "derived_arch.json"
ScoreFn = Callable[[Supernet, Split], tuple[float, dict[str, float]]]


@dataclass
class Splits:
    """Data of a differentiable search: ``weights`` (split A), ``arch`` (split B) and ``val``."""

    weights: Split
    arch: Split
    val: Split


def split_halves(train: Split, seed: int = 0) -> tuple[Split, Split]:
    """Two disjoint random halves of a training set (Auto-DeepLab's trainA / trainB)."""
    n = len(train[0])
    if n < 2:
        raise ValueError(f"need at least 2 training samples to split, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    a, b = perm[: n // 2], perm[n // 2:]
    return (train[0][a], train[1][a]), (train[0][b], train[1][b])


def seg_score_fn(num_classes: int, batch_size: int = 8) -> ScoreFn:
    """Score of a segmentation supernet on a split: ``(seg_reward, {miou, fwiou, pixel_acc})``."""
    from densenas.tasks.segmentation.losses import confusion_matrix, resize_logits, seg_metrics, seg_reward

    def score(supernet: Supernet, val: Split) -> tuple[float, dict[str, float]]:
        was_training = supernet.training
        supernet.eval()
        device = next(supernet.parameters()).device
        conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        try:
            with torch.no_grad():
                for i in range(0, len(val[0]), batch_size):
                    x, y = val[0][i:i + batch_size].to(device), val[1][i:i + batch_size]
                    pred = resize_logits(supernet(x), y.shape[-2:]).argmax(1).cpu()
                    conf += confusion_matrix(pred, y, num_classes)
        finally:
            supernet.train(was_training)
        metrics = seg_metrics(conf)
        return seg_reward(metrics), metrics

    return score


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _record(history: History, rec: dict[str, Any]) -> int:
    """Write an epoch's row unless it is already there (idempotent; finishes a row a kill left running)."""
    arch = Arch.from_dict(rec["arch"])
    result = Result.from_dict(rec["result"])
    state = {"strategy": "darts", "epoch": rec["epoch"], "checkpoint": CHECKPOINT}
    for c in history.finished():
        if c.result.stage == rec["epoch"] and c.result.ok and c.arch.key == arch.key:
            return c.id
    running = [c for c in history.running() if c.arch.key == arch.key]
    cid = running[-1].id if running else history.start(arch, int(rec["seed"]), state)
    history.finish(cid, result, state)
    return cid


def run_differentiable(supernet: Supernet, trainer: DartsTrainer, splits: Splits, score_fn: ScoreFn,
                       history: History, work_dir: str | Path, *, epochs: int,
                       time_budget_s: float | None = None, seed: int = 0,
                       cost_fn: Callable[[Arch], dict[str, float]] | None = None,
                       on_progress: Callable[[Progress], None] | None = None) -> Arch | None:
    """Run (or resume) a differentiable search until ``epochs`` epochs are done or time runs out.

    Args:
        supernet: the supernet ``trainer`` optimises (its ``derive()`` gives each epoch's arch).
        trainer: the DARTS trainer; restored from ``<work_dir>/supernet.pth`` when it exists.
        splits: weight / architecture / validation data.
        score_fn: ``score_fn(supernet, splits.val) -> (reward, metrics)`` (e.g. :func:`seg_score_fn`).
        history: the work dir's history; one finished candidate per epoch.
        work_dir: where the checkpoint and ``derived_arch.json`` (the latest derived arch) go.
        epochs: total epochs wanted (those of earlier runs count).
        time_budget_s: wall-clock limit of this call; the epoch in flight is finished first.
        seed: recorded as every row's seed.
        cost_fn: optional ``cost_fn(arch) -> {"params": ...}`` stored as the row's cost.
        on_progress: called after every epoch with a :class:`~densenas.search.Progress`.

    Returns:
        The arch derived after the last finished epoch (``None`` when no epoch has finished yet).

    Raises:
        FloatingPointError: the supernet diverged (a failed row is recorded first).
        RuntimeError: the history holds epochs but the checkpoint is gone (resuming would repeat them).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / CHECKPOINT
    last: Arch | None = None
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        trainer.load_state_dict(state["trainer"])
        _record(history, state["record"])
        last = Arch.from_dict(state["record"]["arch"])
    elif any(c.result.ok for c in history.finished()):
        raise RuntimeError(f"{history.path} records finished epochs but {ckpt} is missing: cannot resume "
                           f"without repeating them (restore the checkpoint or use a new work dir)")
    t0 = time.perf_counter()
    done_here = 0
    while trainer.epoch < epochs:
        elapsed = time.perf_counter() - t0
        if time_budget_s is not None and elapsed >= time_budget_s:
            break
        started = time.perf_counter()
        try:
            stats = trainer.train_epoch(splits.weights, splits.arch)
        except FloatingPointError as e:
            failed = Result.failed(str(e), stage=trainer.epoch + 1,
                                   wall_time=time.perf_counter() - started)
            try:
                history.finish(history.start(supernet.derive(), seed), failed)
            except Exception:  # noqa: BLE001 - recording is best effort; the divergence is the error
                pass
            raise e
        arch = supernet.derive()
        reward, metrics = score_fn(supernet, splits.val)
        metrics = {**{k: float(v) for k, v in metrics.items()}, **stats}
        cost = dict(cost_fn(arch)) if cost_fn is not None else {}
        result = Result(reward=float(reward), metrics=metrics, stage=trainer.epoch, cost=cost,
                        wall_time=time.perf_counter() - started)
        rec = {"epoch": trainer.epoch, "arch": arch.to_dict(), "result": result.to_dict(), "seed": seed}
        _atomic_save({"trainer": trainer.state_dict(), "record": rec}, ckpt)
        cid = _record(history, rec)
        arch.save(work_dir / DERIVED)
        last = arch
        done_here += 1
        if on_progress is not None:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done_here * (epochs - trainer.epoch)
            if time_budget_s is not None:
                eta = min(eta, max(time_budget_s - elapsed, 0.0))
            on_progress(Progress(trainer.epoch, epochs, history.get(cid), history.best(), elapsed, eta))
    return last


def search_supernet(space: DifferentiableSpace, train: Split, val: Split, loss_fn: Callable, score_fn: ScoreFn,
                    history: History, work_dir: str | Path, *, epochs: int,
                    darts: Mapping[str, Any] | DartsCfg | None = None, seed: int = 0,
                    device: str | torch.device = "cpu", time_budget_s: float | None = None,
                    on_progress: Callable[[Progress], None] | None = None) -> Arch | None:
    """A whole differentiable search, whatever the task (what ``tools/search.py`` runs for DARTS).

    Splits ``train`` into two disjoint halves (weights / architecture), builds the supernet and the
    trainer (cosine schedule over ``epochs`` unless ``darts`` sets ``total_epochs``), and runs
    :func:`run_differentiable` with ``score_fn`` on ``val`` and the derived arch's parameter count as cost.

    Args:
        space: a differentiable space (``AutoDeepLabSpace``, ``IRNASSpace``).
        train: ``(inputs, targets)`` training tensors.
        val: ``(inputs, targets)`` validation tensors.
        loss_fn: ``loss_fn(output, target)`` the supernet is trained with.
        score_fn: ``score_fn(supernet, val) -> (reward, metrics)``.
        history: the work dir's history.
        work_dir: checkpoint / derived-arch directory.
        epochs: total epochs.
        darts: :class:`DartsCfg` or its keyword arguments.
        seed: seed of the split, the supernet initialisation and the batch order.
        device: where the supernet trains (the data stays on the CPU; batches move).
        time_budget_s: wall-clock limit of this call.
        on_progress: called after every epoch.

    Returns:
        The arch derived after the last finished epoch.
    """
    cfg = darts if isinstance(darts, DartsCfg) else DartsCfg(**{"total_epochs": epochs, **dict(darts or {})})
    split_a, split_b = split_halves(train, seed)
    torch.manual_seed(seed)
    supernet = space.build_supernet().to(device)
    trainer = DartsTrainer(supernet, loss_fn, cfg, seed=seed)

    def cost(arch: Arch) -> dict[str, float]:
        return {"params": float(sum(p.numel() for p in space.build(arch).parameters()))}

    return run_differentiable(supernet, trainer, Splits(split_a, split_b, val), score_fn, history, work_dir,
                              epochs=epochs, time_budget_s=time_budget_s, seed=seed, cost_fn=cost,
                              on_progress=on_progress)


def search_segmentation(space: DifferentiableSpace, train: Split, val: Split, num_classes: int,
                        history: History, work_dir: str | Path, *, epochs: int,
                        darts: Mapping[str, Any] | DartsCfg | None = None, seed: int = 0,
                        device: str | torch.device = "cpu", time_budget_s: float | None = None,
                        on_progress: Callable[[Progress], None] | None = None) -> Arch | None:
    """:func:`search_supernet` for segmentation: pixel-wise cross entropy, reward of :func:`seg_score_fn`."""
    from densenas.tasks.segmentation.losses import seg_loss

    batch = darts.batch_size if isinstance(darts, DartsCfg) else dict(darts or {}).get("batch_size", 8)
    return search_supernet(space, train, val, seg_loss, seg_score_fn(num_classes, batch), history, work_dir,
                           epochs=epochs, darts=darts, seed=seed, device=device,
                           time_budget_s=time_budget_s, on_progress=on_progress)
