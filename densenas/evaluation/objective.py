"""Multi-objective rewards: a model cost in the reward (soft constraint) and hard cost limits.

MnasNet (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, Eq. 2)
scalarises accuracy and a cost: ``reward = metric * (cost / target) ** w`` with ``w = alpha`` when the cost is
within the target and ``w = beta`` above it (``alpha = beta = -0.07``: the soft constraint). Nekrasov et al.
("Template-Based Automatic Search of Compact Semantic Segmentation Architectures", WACV 2020) found that
compact is not fast, so the cost here is the parameter count, the multiply-adds or the latency, measured on
the device the search runs on by the runtime the model will be deployed with (``runtime``: eager PyTorch,
ONNX Runtime, TensorRT through ONNX Runtime; :mod:`densenas.latency`). A hard limit rejects a candidate
before it is trained; it is recorded as a failed row with its costs and the reason, so strategies learn to
avoid the region.

Configured by the search config's top-level ``objective`` section (:class:`ObjectiveCfg`); the proxy
evaluator is wrapped by :class:`CostAware`, which every strategy and the loop see as the evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..arch import Arch
from ..latency import RUNTIMES, measure
from ..result import FAILED, OVER_LIMIT, Result
from .common import failure_reason

COSTS = ("params", "madds", "latency_ms", "decoder_params", "decoder_madds")


@dataclass
class ObjectiveCfg:
    """``objective=dict(...)`` of a search config.

    Attributes:
        cost: the cost in the reward, the limit and the Pareto front: ``params`` / ``madds`` (whole model,
            encoder included), ``decoder_params`` / ``decoder_madds`` (the searched part alone) or
            ``latency_ms`` (median forward time of encoder + candidate on this device, warm-up excluded).
        target: the soft constraint's target ``T`` (``None``: the reward is the task's metric alone).
        weight: ``alpha``, the exponent while the cost is within the target (MnasNet: -0.07).
        weight_over: ``beta``, the exponent above the target (default: ``weight``; MnasNet's hard-ish
            variant uses ``alpha = 0``, ``beta = -1``).
        limit: hard limit on the cost: a candidate above it is rejected before training.
        latency_size: ``(height, width)`` of the latency input (default: the proxy image size).
        latency_repeats: timed forward passes (their median is reported).
        latency_warmup: untimed passes first.
        runtime: where the latency is measured: ``torch`` (eager, the search's device), ``onnxruntime``
            (exported to ONNX, ONNX Runtime's CPU execution provider) or ``tensorrt`` (ONNX Runtime's TensorRT,
            else CUDA, execution provider; needs onnxruntime-gpu and a GPU). Measured once per distinct arch.
        latency_threads: ONNX Runtime intra-op threads (``onnxruntime``); ``torch`` uses the process's threads.
        latency_table: a JSON file: the latency is FBNet's lookup-table estimate on ``runtime`` (the sum of
            the candidate's ops, each timed once alone; :mod:`densenas.latency_table`) instead of a
            measurement of the whole candidate. Built as the search meets new ops; several workers writing it
            may each measure an op (the file is replaced atomically, never corrupted).
    """

    cost: str = "params"
    target: float | None = None
    weight: float = -0.07
    weight_over: float | None = None
    limit: float | None = None
    latency_size: tuple[int, int] | list[int] | None = None
    latency_repeats: int = 10
    latency_warmup: int = 3
    runtime: str = "torch"
    latency_threads: int = 1
    latency_table: str | None = None

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {list(COSTS)}, got {self.cost!r}")
        for name in ("target", "limit"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")
        if self.target is None and self.limit is None:
            raise ValueError("give a target (soft constraint), a limit (hard constraint) or both")
        if self.weight > 0 or (self.weight_over is not None and self.weight_over > 0):
            raise ValueError("weight and weight_over must be <= 0: a higher cost must not raise the reward")
        if self.latency_size is not None:
            if len(self.latency_size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.latency_size):
                raise ValueError(f"latency_size must be (height, width), got {self.latency_size!r}")
            self.latency_size = tuple(self.latency_size)
        if self.latency_repeats < 1 or self.latency_warmup < 0:
            raise ValueError("latency_repeats must be >= 1 and latency_warmup >= 0")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {self.runtime!r}")
        if (self.runtime != "torch" or self.latency_table) and self.cost != "latency_ms":
            raise ValueError(f"runtime={self.runtime!r} / latency_table={self.latency_table!r} time the model, but "
                             f"cost={self.cost!r} is not latency_ms")
        if int(self.latency_threads) < 1:
            raise ValueError(f"latency_threads must be >= 1, got {self.latency_threads!r}")

    def scalarise(self, metric: float, cost: float) -> float:
        """MnasNet's reward. The factor ``(cost / target) ** w`` shrinks a positive metric as the cost grows;
        a negative metric (a negative loss) is divided by it instead, so a higher cost is worse either way."""
        if self.target is None:
            return metric
        over = cost > self.target
        w = self.weight if not over or self.weight_over is None else self.weight_over
        factor = (cost / self.target) ** w
        return metric * factor if metric >= 0 else metric / factor


class _Deployed(nn.Module):
    """Encoder + candidate as deployed (the candidate's ``forward(*feats)``), for latency."""

    def __init__(self, encoder: nn.Module, candidate: nn.Module):
        super().__init__()
        self.encoder, self.candidate = encoder, candidate

    def forward(self, x: torch.Tensor) -> Any:
        return self.candidate(*self.encoder(x))


class CostAware:
    """A proxy evaluator with costs in its reward and hard limits (see :class:`ObjectiveCfg`).

    Everything else (``restore``, ``zero_cost``, ``train_longer``, ...) is the wrapped evaluator's, reached
    through :attr:`inner` or by attribute lookup.
    """

    def __init__(self, inner: Any, objective: ObjectiveCfg, image_size: tuple[int, int]):
        self.inner, self.objective = inner, objective
        self.latency_size = tuple(objective.latency_size or image_size)
        self._latency: dict[Arch, float] = {}  # per distinct arch: promoted re-runs are not timed again
        self._table = None  # the FBNet lookup table (objective.latency_table), opened on first use

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on self. While pickle rebuilds a CostAware (Ray ships the evaluator
        # to its workers) ``inner`` is not set yet: looking it up here again would recurse without end.
        if name == "inner" or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def cost(self, arch: Arch) -> dict[str, float]:
        """Params and MAdds of the untrained candidate, counted once per distinct arch by the wrapped evaluator
        (its ``cost``), and its latency when the objective uses it, measured once per distinct arch."""
        out = self.inner.cost(arch)
        if self.objective.cost == "latency_ms":
            if arch not in self._latency:
                self._latency[arch] = self._measure_latency(self.inner.candidate(arch))
            out["latency_ms"] = self._latency[arch]
        return out

    def _measure_latency(self, cand: nn.Module) -> float:
        """Milliseconds of encoder + ``cand`` on ``objective.runtime`` (or the lookup table's estimate)."""
        o = self.objective
        model = _Deployed(self.inner.encoder, cand).eval()
        shape = (1, 3, *self.latency_size)
        try:
            if o.latency_table:
                if self._table is None:
                    from ..latency_table import LatencyTable

                    self._table = LatencyTable(o.latency_table, runtime=o.runtime, threads=o.latency_threads,
                                               warmup=o.latency_warmup, repeats=o.latency_repeats, log=None)
                return self._table.estimate(model.to("cpu"), shape)
            return measure(model, shape, runtime=o.runtime, threads=o.latency_threads, warmup=o.latency_warmup,
                           repeats=o.latency_repeats, device=self.inner.device).ms
        finally:
            model.to(self.inner.device)  # the shared encoder stays where the evaluator keeps it

    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        """Reject ``arch`` above the hard limit (before training), else train it and scalarise its reward;
        the task's own reward is kept as the metric ``metric_reward``."""
        return self._scored(arch, lambda: self.inner.evaluate(arch, seed))

    def evaluate_at(self, arch: Arch, seed: int = 0, scale: float = 1.0) -> Result:
        """:meth:`evaluate` at a promoted budget (the inner ``evaluate_at``, :mod:`densenas.promotion`)."""
        return self._scored(arch, lambda: self.inner.evaluate_at(arch, seed, scale))

    def screen(self, arch: Arch) -> Result | None:
        """The rejection of ``arch`` when a parameter or MAdds limit rules it out, else ``None``.

        The search loop asks this on the driver before a candidate takes a worker and a place in the budget
        (:mod:`densenas.sampling`); a latency limit is left to :meth:`evaluate`, where the candidate would
        train: timing on a driver that shares the machine with busy workers would not be the latency.
        """
        o = self.objective
        if o.limit is None or o.cost == "latency_ms":
            return None
        try:
            cost = self.cost(arch)
        except Exception:  # noqa: BLE001 - the candidate's own run reports an arch that cannot be built
            return None
        return self._rejection(cost)

    def _rejection(self, cost: dict[str, float]) -> Result | None:
        o = self.objective
        value = cost[o.cost]
        if o.limit is not None and value > o.limit:
            return Result(status=FAILED, reward=None, cost=cost, stage=0,
                          error=f"{OVER_LIMIT}: {o.cost} {value:.4g} > {o.limit:.4g} (not trained)")
        return None

    def _scored(self, arch: Arch, train: Any) -> Result:
        o = self.objective
        try:
            cost = self.cost(arch)
        except Exception as e:  # noqa: BLE001 - an arch that cannot be built fails like one that cannot train
            return Result.failed(f"cannot measure its cost: {failure_reason(e)}")
        rejected = self._rejection(cost)
        if rejected is not None:
            return rejected
        r = train()
        r.cost = {**r.cost, **cost}
        if r.ok:
            r.metrics["metric_reward"] = r.reward
            r.reward = o.scalarise(r.reward, cost[o.cost])
        return r
