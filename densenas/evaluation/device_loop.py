"""The pieces that keep a candidate's training loop off the host (the PyTorch performance tuning guide's rules):
data resident on the training device, losses watched on the device and read in
blocks, Polyak averaging without a host read per step, bf16 autocast on CUDA.

A proxy candidate (Nekrasov et al., CVPR 2019) runs a few hundred steps of a few microseconds of GPU work
each; one ``.item()``, ``float(loss)`` or ``if tensor:`` per step makes the GPU wait for the host every
time, and a pageable host-to-device copy per batch does the same. Measured on one H200 before this module
(issue #23): GPU kernels busy 8% of a candidate's wall time, with 1,494 stream synchronisations and 1,006
pageable copies per candidate.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, ContextManager, Iterator

import torch
from torch import Tensor, nn

from .common import Diverged

__all__ = ["DeviceCopies", "LossWatch", "PolyakAverage", "autocast", "cudnn_benchmark", "AMP"]

AMP = ("auto", "bf16", "off")


class DeviceCopies:
    """Tensors an evaluator holds, moved to each device they are asked for once and kept there.

    A target holder (labels, depth maps, heatmaps, teacher logits) keeps its host tensors for the metrics
    and hands the trainer ``copies(t, device)[idx]``: one host-to-device copy per tensor and device for
    the whole search instead of one per batch, and no host read of the (device) batch indices.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def __call__(self, tensor: Tensor, device: Any) -> Tensor:
        d = torch.device(device)
        key = (id(tensor), str(d))
        hit = self._memo.get(key)
        if hit is None or hit[0] is not tensor:  # the host tensor is held, so its id is not reused
            hit = (tensor, tensor.to(d))
            self._memo[key] = hit
        return hit[1]


class LossWatch:
    """A stage's losses kept on the device; their finiteness read once every ``every`` steps.

    The old check (``if not torch.isfinite(loss)`` then ``float(loss)``, every step) is two host reads
    per step. Here a non-finite loss is found at most ``every - 1`` steps later and reported with its
    own step and value, as before (:class:`Diverged`); the steps in between change only weights that
    are then thrown away.

    Args:
        stage: the stage number named in the error.
        every: steps between two host reads (1: every step).
    """

    def __init__(self, stage: int, every: int = 25):
        self.stage, self.every = int(stage), max(int(every), 1)
        self._losses: list[Tensor] = []
        self._checked = 0

    def add(self, loss: Tensor) -> None:
        """Record the loss of the next step (detached; checked when a block is full)."""
        self._losses.append(loss.detach())
        if len(self._losses) - self._checked >= self.every:
            self.check()

    def check(self) -> None:
        """Read the unchecked losses' finiteness (one host read).

        Raises:
            Diverged: ``loss is <value> at stage <s> iter <i>`` for the first non-finite one.
        """
        if self._checked == len(self._losses):
            return
        block = torch.stack(self._losses[self._checked:])
        if not bool(torch.isfinite(block).all()):
            values = block.float().tolist()
            j = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise Diverged(f"loss is {values[j]} at stage {self.stage} iter {self._checked + j}")
        self._checked = len(self._losses)

    def values(self) -> list[float]:
        """Every loss as a float (checks the rest first; one host read)."""
        self.check()
        return torch.stack(self._losses).float().tolist() if self._losses else []


class PolyakAverage:
    """An exponential moving average of a module's parameters and buffers (Polyak averaging).

    The same arithmetic as ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
    use_buffers=True)``: the first update copies, later ones ``lerp`` floating tensors towards the model
    by ``1 - decay`` (``p * decay + m * (1 - decay)`` for integer buffers). Written here because
    ``AveragedModel.update_parameters`` reads its ``n_averaged`` counter on the host twice per update,
    which on CUDA is two synchronisations per training step; the step count is known on the host.

    Args:
        model: the module to average (deep-copied once, here).
        decay: the EMA decay.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"Polyak decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(model)
        self.decay, self.updates = float(decay), 0

    @staticmethod
    def _tensors(m: nn.Module) -> list[Tensor]:
        return [t.detach() for t in (*m.parameters(), *m.buffers())]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        mine, theirs = self._tensors(self.module), self._tensors(model)
        if self.updates == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            floats = [(a, b) for a, b in zip(mine, theirs) if a.is_floating_point() or a.is_complex()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - self.decay)
            for a, b in zip(mine, theirs):
                if not (a.is_floating_point() or a.is_complex()):
                    a.copy_(a * self.decay + b * (1.0 - self.decay))
        self.updates += 1


def autocast(device: torch.device, amp: str, cache: bool = True) -> ContextManager[Any]:
    """bf16 autocast where it pays: ``amp="auto"`` on CUDA only (fp32 weights and optimiser either way;
    bf16 needs no loss scaling); ``"bf16"`` also on the CPU; ``"off"`` never. ``cache=False`` turns off
    autocast's cache of cast weights (required while a CUDA graph is captured)."""
    if amp not in AMP:
        raise ValueError(f"evaluator.amp must be one of {list(AMP)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device, on: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` while a candidate trains on CUDA (the proxy's shapes are fixed,
    so the autotuned kernels are reused for every step); the old setting after."""
    if not on or device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old
