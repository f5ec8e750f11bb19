"""The one proxy trainer of candidate architectures (Nekrasov et al., "Fast Neural Architecture Search of
Compact Semantic Segmentation Models via Auxiliary Cells", CVPR 2019, Sec. 3), for every task.

Stage 1 trains only the candidate (a decoder, a detector's neck and head, ...) on encoder features cached
once per search (:class:`~densenas.evaluation.cache.FeatureCache`), with auxiliary-head and distillation
loss terms and Polyak (EMA) averaging of its weights. A candidate whose stage-1 reward is below the
running mean of earlier candidates' stage-1 rewards stops there (:class:`~.common.RunningMean`); the others
are fine-tuned end to end in stage 2 (a copy of the encoder, its BatchNorm frozen, its lr scaled by
``encoder_lr_mult``). A candidate that diverges, raises or runs out of memory comes back as a failed
:class:`~densenas.result.Result`.

The trainer knows no task. It calls exactly these methods of the ``task`` object it is given (declared by
:class:`densenas.task.Task`):

* ``task.images(split) -> Tensor``: the normalised ``N x 3 x H x W`` images of ``"train"`` and ``"val"``
  (called once each, when the trainer is built);
* ``task.build_candidate(space, arch, shapes) -> nn.Module``: the candidate for ``arch`` (below);
* ``task.batch(split, idx, device) -> Any``: the targets of images ``idx`` (an int64 tensor) of ``split``
  in whatever form the candidate's ``loss`` / ``predict`` take (on ``"train"`` with the cached teacher
  targets when the task distils);
* ``task.metrics(preds, split) -> dict[str, float]``: metrics over the whole split from the list of
  ``predict`` outputs of its consecutive batches of ``eval_batch_size`` images, in image order;
* ``task.reward(metrics) -> float``: the scalar strategies maximise.

A candidate is an ``nn.Module`` with

* ``loss(feats, batch) -> dict[str, Tensor]``: scalar terms, every key starting with ``loss_``. The trainer
  adds them in insertion order: ``loss_aux*`` terms times :attr:`ProxyCfg.aux_weight`, ``loss_kd*`` terms
  times :attr:`ProxyCfg.kd_weight` in stage 1 only (left out in stage 2 and when ``kd_weight`` is 0: like
  Polyak averaging, distillation speeds up the short training of the candidate alone), every other term
  as is;
* ``predict(feats, batch) -> Any``: called in eval mode under ``torch.no_grad()``; it may switch modes
  inside (detection measures its loss there) but must leave the module in eval mode, and raises
  :class:`~.common.Diverged` on non-finite outputs;
* ``forward(*feats)``: the deployed computation, for MAdds counting and zero-cost scores
  (:meth:`ProxyTrainer.zero_cost`);
* optionally ``aux_heads`` (a module of training-only parameters, left out of ``decoder_params``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..arch import Arch
from ..objectives import count_madds, count_params
from ..result import Result
from ..space import SearchSpace
from ..zerocost import SCORES as ZERO_COST_SCORES
from ..zerocost import score as zero_cost_score
from .cache import FeatureCache
from .common import Diverged, RunningMean, StageCfg, failure_reason, set_norm_eval

SAMPLING = ("without_replacement", "with_replacement")
SPLITS = ("train", "val")


@dataclass
class ProxyCfg:
    """Proxy-training settings (``evaluator=dict(type="proxy", ...)`` in a search config).

    Attributes:
        stage1: candidate training on cached features (``encoder_lr_mult`` unused).
        stage2: end-to-end fine-tuning (``None`` or ``iters=0`` disables it).
        early_stop: skip stage 2 when the stage-1 reward is below the running mean of earlier ones.
        sampling: how a training batch is drawn from the proxy training images each iteration:
            ``"without_replacement"`` (default: ``batch_size`` distinct images, a fresh random subset every
            iteration; a duplicate image in a small batch only shrinks it and skews BatchNorm statistics) or
            ``"with_replacement"`` (independent uniform draws; the old segmentation evaluator's rule).
        grad_clip: max global gradient norm (``None``, the default: no clipping; the old detection
            evaluator clipped at 35, mmdet's FCOS/RetinaNet setting).
        polyak: EMA decay of the stage-1 weights; ``0`` disables averaging (the last weights are scored).
        polyak_cap: cap the decay at ``1 - 4 / max(iters, 8)`` (default ``True``). Proxy runs are short: with
            decay 0.99 and 80 iterations an uncapped average still gives 45 % (0.99 ** 79) of its weight to
            the weights after the first step; capped (0.95) that share is 2 % and the average covers about
            the last quarter of the run. ``False`` keeps the old segmentation evaluator's behaviour.
        aux_weight: weight of the candidate's ``loss_aux*`` terms (auxiliary heads).
        kd_weight: weight of its ``loss_kd*`` terms (knowledge distillation; stage 1 only; 0 disables).
        eval_batch_size: images per validation batch (the batch size shapes a per-batch normalised loss,
            such as the detection ``neg_loss``; 16 keeps the detection rewards of before).
        measure_cost: record params and MAdds in ``Result.cost``.
    """

    stage1: StageCfg = field(default_factory=StageCfg)
    stage2: StageCfg | None = field(default_factory=lambda: StageCfg(iters=30, batch_size=8, lr=1e-3))
    early_stop: bool = True
    sampling: str = "without_replacement"
    grad_clip: float | None = None
    polyak: float = 0.99
    polyak_cap: bool = True
    aux_weight: float = 0.4
    kd_weight: float = 0.5
    eval_batch_size: int = 16
    measure_cost: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stage1, Mapping):
            self.stage1 = StageCfg(**self.stage1)
        if isinstance(self.stage2, Mapping):
            self.stage2 = StageCfg(**self.stage2)
        if self.sampling not in SAMPLING:
            raise ValueError(f"evaluator.sampling must be one of {list(SAMPLING)}, got {self.sampling!r}")
        if not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"evaluator.polyak must be in [0, 1), got {self.polyak}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"evaluator.grad_clip must be positive or None, got {self.grad_clip}")
        if int(self.eval_batch_size) < 1:
            raise ValueError(f"evaluator.eval_batch_size must be at least 1, got {self.eval_batch_size}")

    def ema_decay(self, iters: int) -> float:
        """The Polyak decay used for a stage 1 of ``iters`` iterations (0: no averaging)."""
        if self.polyak <= 0 or not self.polyak_cap:
            return float(self.polyak)
        return min(self.polyak, 1.0 - 4.0 / max(iters, 8))


class _Joint(nn.Module):
    """Stage 2's model: a copy of the encoder and the candidate, trained together."""

    def __init__(self, encoder: nn.Module, candidate: nn.Module):
        super().__init__()
        self.encoder, self.candidate = encoder, candidate


def deploy_params(candidate: nn.Module) -> int:
    """Parameters used at inference: the training-only auxiliary heads (``aux_heads``) excluded."""
    aux = getattr(candidate, "aux_heads", None)
    return count_params(candidate) - (count_params(aux) if isinstance(aux, nn.Module) else 0)


class ProxyTrainer(RunningMean):
    """Scores architectures of ``space`` for ``task`` with the two-stage proxy training.

    Args:
        task: the task (see the module docstring for the methods called).
        space: the search space (``check(arch)``; handed to ``task.build_candidate``).
        encoder: pretrained encoder returning a list of feature maps; never modified (stage 2 copies it).
        shapes: the encoder's feature shapes (handed to ``task.build_candidate`` as given).
        cfg: budgets and options.
        device: where training runs.
        cache_dir: where the encoder features are stored between runs (``None``: memory only).
        log: progress callback.
    """

    def __init__(self, task: Any, space: SearchSpace, encoder: nn.Module, shapes: Any, cfg: ProxyCfg | None = None,
                 device: str | torch.device = "cpu", cache_dir=None, log: Callable[[str], None] = print):
        self.task, self.space, self.encoder, self.shapes = task, space, encoder.eval(), shapes
        self.cfg = cfg or ProxyCfg()
        self.device, self.log = torch.device(device), log
        self.images = {s: task.images(s) for s in SPLITS}
        t0 = time.perf_counter()
        self.caches = {s: FeatureCache(encoder, x, device=self.device,
                                       path=None if cache_dir is None else f"{cache_dir}/feats_{s}.pt")
                       for s, x in self.images.items()}
        self.cache_seconds = time.perf_counter() - t0
        self.stage1_rewards: list[float] = []
        self._encoder_cost: tuple[int, int] | None = None

    # -------------------------------------------------------------- evaluate
    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        """Train and score ``arch``; never raises for a bad candidate (returns a failed Result)."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        progress = {"stage": 0}
        try:
            reward, cand, _ = self._run(arch, seed, self.cfg.stage1.iters, self._stage2_iters(), metrics,
                                        progress, early_stop=self.cfg.early_stop, record=True)
            cost = self.cost_of(cand) if self.cfg.measure_cost else {}
            return Result(reward=reward, metrics=metrics, stage=progress["stage"], cost=cost,
                          wall_time=time.perf_counter() - t0)
        except Exception as e:  # one bad candidate must not end the search
            why = failure_reason(e)
        return Result.failed(why, stage=progress["stage"], wall_time=time.perf_counter() - t0, **metrics)

    def train_longer(self, arch: Arch, iters: int, seed: int = 0, stage2_iters: int | None = None
                     ) -> dict[str, float]:
        """Train ``arch`` on the same path with a longer budget, no early stop; the running mean is untouched.

        Args:
            arch: the architecture.
            iters: stage-1 iterations.
            seed: training seed.
            stage2_iters: end-to-end iterations (default: the configured stage-2 share of ``iters``).

        Returns:
            The task's metrics on the proxy val set after the last stage, ``reward``, ``stage`` and
            ``seconds``.

        Raises:
            Diverged: a non-finite loss (any other error propagates too).
        """
        t0 = time.perf_counter()
        if stage2_iters is None:
            stage2_iters = round(iters * self._stage2_iters() / max(self.cfg.stage1.iters, 1))
        metrics: dict[str, float] = {}
        progress = {"stage": 0}
        reward, _, final = self._run(arch, seed, int(iters), int(stage2_iters), metrics, progress,
                                     early_stop=False, record=False)
        return {**final, "reward": reward, "stage": float(progress["stage"]),
                "seconds": time.perf_counter() - t0}

    def _stage2_iters(self) -> int:
        return 0 if self.cfg.stage2 is None else int(self.cfg.stage2.iters)

    def _run(self, arch: Arch, seed: int, iters1: int, iters2: int, metrics: dict[str, float],
             progress: dict[str, int], early_stop: bool, record: bool
             ) -> tuple[float, nn.Module, dict[str, float]]:
        """Stage 1, the early-stopping test, stage 2; fills ``metrics``; returns (reward, candidate, final
        metrics)."""
        self.space.check(arch)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        cand = self.task.build_candidate(self.space, arch, self.shapes).to(self.device)
        progress["stage"] = 1
        cand, trace = self._stage1(cand, gen, iters1)
        m1 = self._validate(cand, lambda idx: self.caches["val"].batch(idx, self.device))
        r1 = float(self.task.reward(m1))
        k = max(1, min(5, len(trace) // 4))
        metrics.update({f"stage1_{n}": v for n, v in m1.items()}, stage1_reward=r1,
                       stage1_loss_first=sum(trace[:k]) / k, stage1_loss_last=sum(trace[-k:]) / k)
        mean = self.running_mean
        if record:
            self.stage1_rewards.append(r1)
        reward, final = r1, m1
        if iters2 > 0 and not (early_stop and mean is not None and r1 < mean):
            progress["stage"] = 2
            model = self._stage2(cand, gen, iters2)
            final = self._validate(model.candidate,
                                   lambda idx: model.encoder(self.images["val"][idx].to(self.device)))
            reward = float(self.task.reward(final))
            metrics.update({f"stage2_{n}": v for n, v in final.items()}, stage2_reward=reward)
            cand = model.candidate
        metrics.update(final)
        return reward, cand, final

    # -------------------------------------------------------------- zero cost
    def zero_cost(self, arch: Arch, method: str = "naswot", seed: int = 0, batch_size: int = 32) -> float:
        """A zero-cost score of the untrained candidate for ``arch`` (:mod:`densenas.zerocost`), for a warm
        start: nothing is trained, the running mean and the global RNG are untouched.

        The candidate is built as :meth:`evaluate` builds it with this ``seed`` (``task.build_candidate``
        with the encoder's shapes, after ``torch.manual_seed(seed)``) and scored through its deployed
        ``forward(*feats)`` on ``batch_size`` training images' cached encoder features (drawn with
        ``seed``): the encoder is fixed, the candidate is what varies.

        Args:
            arch: the architecture.
            method: a key of :data:`densenas.zerocost.SCORES` (``naswot``, ``synflow``, ``zen``).
            seed: initialisation, batch and score seed.
            batch_size: images of the batch (at most the training set).

        Raises:
            InvalidArch: ``arch`` is not in the space; ValueError: unknown ``method``.
        """
        if method not in ZERO_COST_SCORES:
            raise ValueError(f"unknown zero-cost proxy {method!r}; available: {sorted(ZERO_COST_SCORES)}")
        cand = self.candidate(arch, seed)
        cache = self.caches["train"]
        idx = torch.randperm(len(cache), generator=torch.Generator().manual_seed(seed))[:batch_size]
        return zero_cost_score(method, cand, cache.batch(idx.sort().values, self.device), seed=seed)

    def candidate(self, arch: Arch, seed: int = 0) -> nn.Module:
        """The untrained candidate for ``arch`` as :meth:`evaluate` builds it with ``seed``; the global RNG
        is untouched. Raises InvalidArch when ``arch`` is not in the space."""
        self.space.check(arch)
        with torch.random.fork_rng(devices=[]):  # the candidate is built on the CPU, then moved
            torch.manual_seed(seed)
            return self.task.build_candidate(self.space, arch, self.shapes).to(self.device)

    # ----------------------------------------------------------------- stages
    def _indices(self, n: int, batch_size: int, gen: torch.Generator) -> Tensor:
        """One training batch of image indices, drawn by the ``sampling`` rule."""
        k = min(batch_size, n)
        if self.cfg.sampling == "with_replacement":
            return torch.randint(n, (k,), generator=gen)
        return torch.randperm(n, generator=gen)[:k]

    def _total(self, losses: Mapping[str, Tensor], stage: int) -> Tensor:
        """The weighted sum of a candidate's loss terms (see the module docstring)."""
        total = None
        for key, value in losses.items():
            if not key.startswith("loss_"):
                raise ValueError(f"candidate loss key {key!r} does not start with 'loss_'")
            if key.startswith("loss_kd"):
                if stage != 1 or self.cfg.kd_weight <= 0:
                    continue
                value = self.cfg.kd_weight * value
            elif key.startswith("loss_aux"):
                value = self.cfg.aux_weight * value
            total = value if total is None else total + value
        if total is None:
            raise ValueError(f"candidate loss gave no term to train on (keys {sorted(losses)})")
        return total

    def _step(self, opt, sched, params: list[Tensor], loss: Tensor, stage: int, it: int) -> float:
        if not torch.isfinite(loss):
            raise Diverged(f"loss is {loss.item()} at stage {stage} iter {it}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()
        sched.step()
        return float(loss.detach())

    def _stage1(self, cand: nn.Module, gen: torch.Generator, iters: int) -> tuple[nn.Module, list[float]]:
        c = self.cfg.stage1
        decay = self.cfg.ema_decay(iters)
        ema = AveragedModel(cand, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) \
            if self.cfg.polyak > 0 else None
        params = [p for p in cand.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        cand.train()
        cache, trace = self.caches["train"], []
        for it in range(iters):
            idx = self._indices(len(cache), c.batch_size, gen)
            feats = cache.batch(idx, self.device)
            loss = self._total(cand.loss(feats, self.task.batch("train", idx, self.device)), 1)
            trace.append(self._step(opt, sched, params, loss, 1, it))
            if ema is not None:
                ema.update_parameters(cand)
        return (ema.module if ema is not None and iters > 0 else cand), trace

    def _stage2(self, cand: nn.Module, gen: torch.Generator, iters: int) -> _Joint:
        c = self.cfg.stage2 or StageCfg(iters=iters)
        model = _Joint(copy.deepcopy(self.encoder), cand).to(self.device)
        groups = [{"params": [p for p in cand.parameters() if p.requires_grad], "lr": c.lr},
                  {"params": [p for p in model.encoder.parameters() if p.requires_grad],
                   "lr": c.lr * c.encoder_lr_mult}]
        opt = torch.optim.AdamW(groups, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        model.train()
        set_norm_eval(model.encoder)
        params = [p for g in groups for p in g["params"]]
        images = self.images["train"]
        for it in range(iters):
            idx = self._indices(len(images), c.batch_size, gen)
            feats = model.encoder(images[idx].to(self.device))
            loss = self._total(cand.loss(feats, self.task.batch("train", idx, self.device)), 2)
            self._step(opt, sched, params, loss, 2, it)
        return model.eval()

    # -------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self, cand: nn.Module, feats_of: Callable[[Tensor], list[Tensor]]) -> dict[str, float]:
        """The task's metrics on the proxy val set, predicted in batches of ``eval_batch_size`` images."""
        cand.eval()
        n, bs = len(self.images["val"]), int(self.cfg.eval_batch_size)
        preds = []
        for i in range(0, n, bs):
            idx = torch.arange(i, min(i + bs, n))
            preds.append(cand.predict(feats_of(idx), self.task.batch("val", idx, self.device)))
        cand.eval()
        return dict(self.task.metrics(preds, "val"))

    def cost_of(self, cand: nn.Module) -> dict[str, float]:
        """Params (total, candidate without ``aux_heads``) and MAdds (total, candidate) at the proxy size."""
        cand.eval()
        feats = self.caches["val"].batch(torch.tensor([0]), self.device)
        dec_params, dec_madds = deploy_params(cand), count_madds(cand, *feats)
        if self._encoder_cost is None:
            self._encoder_cost = (count_params(self.encoder),
                                  count_madds(self.encoder, self.images["val"][:1].to(self.device)))
        enc_params, enc_madds = self._encoder_cost
        return {"params": float(enc_params + dec_params), "decoder_params": float(dec_params),
                "madds": float(enc_madds + dec_madds), "decoder_madds": float(dec_madds)}
