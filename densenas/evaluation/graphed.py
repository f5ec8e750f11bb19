"""A proxy stage's training steps replayed from one CUDA graph (issue #23).

A proxy candidate (Nekrasov et al., CVPR 2019) trains a few hundred steps whose GPU work is microseconds per
kernel, while PyTorch spends tens to hundreds of microseconds of host time launching each of the several
hundred kernels of a step (forward, backward, AdamW, Polyak average): measured on one H200, the GPU was busy
8% of a candidate's wall time. Recording one step as a CUDA graph and replaying it for the others (the
PyTorch documentation's "whole network capture", ``torch.cuda.graph``) launches the whole step at once.

What a replayed step needs and this module provides:

* the batch indices of every step drawn up front on the device (same generator, same stream of draws as
  the eager loop), copied into a static index tensor before each replay;
* learning rates as device tensors read by AdamW's fused, capturable kernel, filled before each replay from
  the closed form of ``CosineAnnealingLR(T_max=iters)``, which is what the eager loop schedules;
* warm-up steps run eagerly on a side stream before the capture (cuDNN autotuning, AdamW state and the
  autocast casts settle there), as the documentation asks;
* the loss of each replay copied out of the graph's static output into the stage's
  :class:`~.device_loop.LossWatch`, so divergence is found and reported as in the eager loop;
* Polyak averaging recorded in the same graph after the optimiser step (its updates are device tensor ops
  of a fixed decay once the first, copying, update has run in the warm-up).

A step whose code reads the host (a data-dependent shape, ``.item()``: detection's target assignment, say)
cannot be captured. The last warm-up step runs under torch's CUDA sync debug mode set to raise, so such a
step is found before any capture; the stage then goes on eagerly (as it does if a capture fails anyway),
and the reason is returned so the trainer stops trying for the rest of the search.

``mode="emulate"`` runs the same bookkeeping (drawn-up-front indices, tensor learning rates, static index
buffer) without a graph, on any device: the CPU tests compare it with the eager loop.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import Tensor

from .device_loop import LossWatch

__all__ = ["GRAPH_MODES", "cosine_lr", "graphs_wanted", "train_steps"]

#: ``evaluator.cuda_graphs``: "auto" (CUDA only), "off", "emulate" (the graph path's bookkeeping without a
#: graph, any device: for tests)
GRAPH_MODES = ("auto", "off", "emulate")


def graphs_wanted(mode: str, device: torch.device) -> str | None:
    """``"capture"``, ``"emulate"`` or ``None`` (the eager loop) for ``evaluator.cuda_graphs=mode`` on
    ``device``."""
    if mode not in GRAPH_MODES:
        raise ValueError(f"evaluator.cuda_graphs must be one of {list(GRAPH_MODES)}, got {mode!r}")
    if mode == "emulate":
        return "emulate"
    if mode == "auto" and device.type == "cuda":
        return "capture"
    return None


def cosine_lr(base: float, step: int, total: int) -> float:
    """The learning rate ``CosineAnnealingLR(opt, T_max=total)`` (``eta_min=0``) sets for step ``step``
    (0-based; step 0 trains at ``base``)."""
    return base * (1.0 + math.cos(math.pi * step / max(total, 1))) / 2.0


def _reads_host(step: Callable[[], None]) -> str | None:
    """Run ``step`` with torch's CUDA sync debug mode set to raise; why it read the host, or ``None``.

    A step that synchronises with the host (``.item()``, ``nonzero``, a pageable copy: detection's target
    assignment, say) cannot be captured; finding that out on an eager step is cheaper and safer than a
    failed capture."""
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError as e:
        if "synchroniz" not in str(e):
            raise
        return f"the step synchronises with the host ({str(e).splitlines()[0][:200]})"
    finally:
        torch.cuda.set_sync_debug_mode(old)
    return None


def train_steps(groups: Sequence[dict[str, Any]], loss_of: Callable[[Tensor], Tensor], indices: Tensor,
                watch: LossWatch, *, weight_decay: float, grad_clip: float | None,
                amp: Callable[[], ContextManager[Any]], after_step: Callable[[], None] | None = None,
                mode: str = "capture", warmup: int = 3) -> str | None:
    """Train ``len(indices)`` steps of AdamW under a cosine schedule, replaying one captured step.

    Args:
        groups: AdamW parameter groups, each with its float ``lr``.
        loss_of: the step's scalar loss for a batch of image indices (forward only).
        indices: ``iters x batch`` int64 image indices on the training device, one row per step.
        watch: receives every step's loss.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: max global gradient norm, or ``None``.
        amp: a fresh autocast context for the forward pass (its weight-cast cache off under capture).
        after_step: called after every step (Polyak averaging). Its tensor work is captured with the step
            and replayed with it (only its first call may differ from the later ones: Polyak's first update
            copies, and runs in the warm-up), so it must be device-only work.
        mode: ``"capture"`` (CUDA) or ``"emulate"``.
        warmup: eager steps before the capture.

    Returns:
        ``None`` when every step after the warm-up was replayed, or why the capture failed (the remaining
        steps then ran eagerly, so the stage is complete either way).
    """
    if mode not in ("capture", "emulate"):
        raise ValueError(f"mode must be 'capture' or 'emulate', got {mode!r}")
    if warmup < 1:  # the captured step must be one like the later ones (Polyak's first update differs)
        raise ValueError(f"warmup must be at least 1, got {warmup}")
    total = int(indices.shape[0])
    device = indices.device
    capture = mode == "capture"
    bases = [float(g["lr"]) for g in groups]
    groups = [{**g, "lr": torch.tensor(b, device=device)} for g, b in zip(groups, bases)]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True, capturable=capture)
    params = [p for g in opt.param_groups for p in g["params"]]

    def set_lr(t: int) -> None:
        for g, base in zip(opt.param_groups, bases):
            g["lr"].fill_(cosine_lr(base, t, total))

    def body(idx: Tensor) -> Tensor:
        with amp():
            loss = loss_of(idx)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return loss

    def finish(loss: Tensor) -> None:
        watch.add(loss)
        if after_step is not None:
            after_step()

    def eager_step(t: int) -> None:
        set_lr(t)
        opt.zero_grad(set_to_none=True)
        finish(body(indices[t]))

    start = min(warmup, total)
    if capture:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        reads_host = None
        with torch.cuda.stream(side):
            for t in range(start):
                if t == start - 1 and start < total:  # what would be captured, under the sync check
                    set_lr(t)
                    opt.zero_grad(set_to_none=True)
                    out: list[Tensor] = []
                    reads_host = _reads_host(lambda: out.append(body(indices[t])))
                    if reads_host is None:
                        finish(out[0])
                    else:  # the step stopped part-way: redo it without the check
                        eager_step(t)
                else:
                    eager_step(t)
        torch.cuda.current_stream(device).wait_stream(side)
        if reads_host is not None:  # a capture would fail (and may leave the allocator in a bad state)
            for t in range(start, total):
                eager_step(t)
            return reads_host
    else:
        for t in range(start):
            eager_step(t)
    if start >= total:
        return None
    static_idx = indices[start].clone()
    if not capture:  # the replays' bookkeeping, one eager step per "replay"
        for t in range(start, total):
            static_idx.copy_(indices[t])
            set_lr(t)
            opt.zero_grad(set_to_none=True)  # a replay overwrites the gradients it produced at capture
            finish(body(static_idx))
        return None
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph's pool
    try:
        with torch.cuda.graph(graph):
            static_loss = body(static_idx)
            if after_step is not None:  # Polyak averaging: its tensor updates replay with the step
                after_step()
    except Exception as e:  # a host read or an op that cannot be captured: finish the stage eagerly
        del graph
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        for t in range(start, total):
            eager_step(t)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    for t in range(start, total):
        static_idx.copy_(indices[t])
        set_lr(t)
        graph.replay()
        watch.add(static_loss.clone())  # the static output is overwritten by the next replay
    return None
