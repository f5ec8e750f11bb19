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

import contextlib
import copy
import time
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..arch import Arch
from ..costs import count_madds, count_params
from ..result import Result
from ..space import SearchSpace
from ..zerocost import SCORES as ZERO_COST_SCORES
from ..zerocost import score as zero_cost_score
from .cache import FeatureCache
from .common import RunningMean, StageCfg, failure_reason, set_norm_eval
from .device_loop import LossWatch, PolyakAverage, autocast, cudnn_benchmark
from .graphed import graphs_wanted, train_steps
from .proxy_cfg import MEMORY_FORMATS, SAMPLING, ProxyCfg, to_format

__all__ = ["ProxyTrainer", "ProxyCfg", "MEMORY_FORMATS", "SAMPLING", "deploy_params", "to_format"]

SPLITS = ("train", "val")


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
        # once per search, not per step: features and images live on the training device in the memory
        # format the candidates train in (a batch is then one gather, no per-step layout copy)
        fmt = self.cfg.torch_memory_format
        for cache in self.caches.values():
            cache.features = [to_format(f.to(self.device), fmt) for f in cache.features]
        self.images = {s: to_format(x.to(self.device), fmt) for s, x in self.images.items()}
        self.stage1_rewards: list[float] = []
        self._encoder_cost: tuple[int, int] | None = None
        self._costs: dict[str, dict[str, float]] = {}  # arch key -> cost (counted once per distinct arch)
        self._graphs_failed: dict[int, str] = {}  # stage -> why its step could not be captured

    # -------------------------------------------------------------- evaluate
    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        """Train and score ``arch``; never raises for a bad candidate (returns a failed Result)."""
        return self._scored(arch, seed, self.cfg.stage1.iters, self._stage2_iters(), early_stop=self.cfg.early_stop,
                            record=True)

    def evaluate_at(self, arch: Arch, seed: int = 0, scale: float = 1.0) -> Result:
        """Train and score ``arch`` at a promoted budget (:mod:`densenas.promotion`): both stages with
        ``scale`` times their configured iterations, no early stop, the running mean untouched; never raises
        for a bad candidate (returns a failed Result).

        Args:
            arch: the architecture.
            seed: training seed.
            scale: budget multiplier (> 0) of both stages.
        """
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        return self._scored(arch, seed, max(1, round(self.cfg.stage1.iters * scale)),
                            round(self._stage2_iters() * scale), early_stop=False, record=False)

    def _scored(self, arch: Arch, seed: int, iters1: int, iters2: int, early_stop: bool, record: bool) -> Result:
        """:meth:`_run` as a :class:`Result` with the cost; a failure is caught and named, never raised."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        progress = {"stage": 0}
        try:
            reward, cand, _ = self._run(arch, seed, iters1, iters2, metrics, progress, early_stop=early_stop,
                                        record=record)
            cost = self._cost_once(arch, lambda: cand) if self.cfg.measure_cost else {}
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
        with self._threads(), cudnn_benchmark(self.device, self.cfg.cudnn_benchmark):
            return self._run_stages(arch, seed, iters1, iters2, metrics, progress, early_stop, record)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """``cfg.cpu_threads`` torch threads while a candidate trains on the CPU; the old count after."""
        old = torch.get_num_threads()
        change = self.cfg.cpu_threads is not None and self.device.type == "cpu" and self.cfg.cpu_threads != old
        if change:
            torch.set_num_threads(int(self.cfg.cpu_threads))
        try:
            yield
        finally:
            if change:
                torch.set_num_threads(old)

    def _run_stages(self, arch: Arch, seed: int, iters1: int, iters2: int, metrics: dict[str, float],
                    progress: dict[str, int], early_stop: bool, record: bool
                    ) -> tuple[float, nn.Module, dict[str, float]]:
        self.space.check(arch)
        torch.manual_seed(seed)
        gen = self._generator(seed)
        cand = self._place(self.task.build_candidate(self.space, arch, self.shapes))
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
            final = self._validate(model.candidate, lambda idx: model.encoder(self.images["val"][idx]))
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
        return zero_cost_score(method, cand, cache.batch(idx.sort().values.to(self.device), self.device),
                               seed=seed)

    def candidate(self, arch: Arch, seed: int = 0) -> nn.Module:
        """The untrained candidate for ``arch`` as :meth:`evaluate` builds it with ``seed``; the global RNG
        is untouched. Raises InvalidArch when ``arch`` is not in the space."""
        self.space.check(arch)
        with torch.random.fork_rng(devices=[]):  # the candidate is built on the CPU, then moved
            torch.manual_seed(seed)
            return self._place(self.task.build_candidate(self.space, arch, self.shapes))

    def _place(self, module: nn.Module) -> nn.Module:
        """``module`` on the training device, in the configured memory format."""
        return module.to(self.device, memory_format=self.cfg.torch_memory_format)

    def _adamw(self, params: Any, **kw: Any) -> torch.optim.AdamW:
        return torch.optim.AdamW(params, fused=self.cfg.fused_adamw or None, **kw)

    # ----------------------------------------------------------------- stages
    def _generator(self, seed: int) -> torch.Generator:
        """The batch-sampling generator, on the training device (CUDA draws indices on the GPU; on the CPU
        the stream is the one of ``torch.Generator().manual_seed(seed)``)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def _indices(self, n: int, batch_size: int, gen: torch.Generator) -> Tensor:
        """One training batch of image indices, drawn on the training device by the ``sampling`` rule."""
        k = min(batch_size, n)
        if self.cfg.sampling == "with_replacement":
            return torch.randint(n, (k,), generator=gen, device=self.device)
        return torch.randperm(n, generator=gen, device=self.device)[:k]

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

    def _step(self, opt, sched, params: list[Tensor], loss: Tensor, watch: LossWatch) -> None:
        """One optimiser step; no host read (``watch`` checks the losses in blocks)."""
        watch.add(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()
        sched.step()

    def _train_stage(self, stage: int, groups: list[dict[str, Any]], loss_of: Callable[[Tensor], Tensor], n: int,
                     c: StageCfg, gen: torch.Generator, iters: int, watch: LossWatch,
                     after: Callable[[], None] | None) -> None:
        """``iters`` AdamW steps under a cosine schedule of ``loss_of(batch indices)`` (batches of ``c.batch_size``
        of ``n`` images drawn from ``gen``), each loss into ``watch``, ``after()`` after each step: replayed
        from a CUDA graph where that is on (:mod:`~.graphed`), else the eager loop."""
        mode = graphs_wanted(self.cfg.cuda_graphs, self.device)
        if mode is not None and stage not in self._graphs_failed and iters > 0:
            self._graphed(stage, mode, groups, loss_of, n, c, gen, iters, watch, after)
            return
        opt = self._adamw(groups, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        params = [p for g in groups for p in g["params"]]
        for _ in range(iters):
            idx = self._indices(n, c.batch_size, gen)
            with autocast(self.device, self.cfg.amp):
                loss = loss_of(idx)
            self._step(opt, sched, params, loss, watch)
            if after is not None:
                after()

    def _graphed(self, stage: int, mode: str, groups: list[dict[str, Any]], loss_of: Callable[[Tensor], Tensor],
                 n: int, c: StageCfg, gen: torch.Generator, iters: int, watch: LossWatch,
                 after: Callable[[], None] | None) -> None:
        """The stage with its step replayed from a CUDA graph; a step that cannot be captured is logged and
        the stage's later candidates train eagerly."""
        # the eager loop's draws, in its order, from the same generator
        indices = torch.stack([self._indices(n, c.batch_size, gen) for _ in range(iters)])
        cache = mode == "emulate"  # autocast's cast-weight cache cannot be captured
        why = train_steps(groups, loss_of, indices, watch, weight_decay=c.weight_decay, grad_clip=self.cfg.grad_clip,
                          amp=lambda: autocast(self.device, self.cfg.amp, cache=cache), after_step=after, mode=mode)
        if why is not None:
            self._graphs_failed[stage] = why
            self.log(f"stage {stage} steps cannot be replayed from a CUDA graph ({why}); this search trains "
                     f"stage {stage} eagerly from here on")

    def _stage1(self, cand: nn.Module, gen: torch.Generator, iters: int) -> tuple[nn.Module, list[float]]:
        c = self.cfg.stage1
        ema = PolyakAverage(cand, self.cfg.ema_decay(iters)) if self.cfg.polyak > 0 else None
        params = [p for p in cand.parameters() if p.requires_grad]
        cand.train()
        cache, watch = self.caches["train"], LossWatch(1, self.cfg.check_every)

        def loss_of(idx: Tensor) -> Tensor:
            return self._total(cand.loss(cache.batch(idx, self.device), self.task.batch("train", idx, self.device)), 1)

        after = (lambda: ema.update(cand)) if ema is not None else None
        self._train_stage(1, [{"params": params, "lr": c.lr}], loss_of, len(cache), c, gen, iters, watch, after)
        trace = watch.values()  # the stage's one host read of its losses
        return (ema.module if ema is not None and iters > 0 else cand), trace

    def _stage2(self, cand: nn.Module, gen: torch.Generator, iters: int) -> _Joint:
        c = self.cfg.stage2 or StageCfg(iters=iters)
        model = self._place(_Joint(copy.deepcopy(self.encoder), cand))
        groups = [{"params": [p for p in cand.parameters() if p.requires_grad], "lr": c.lr},
                  {"params": [p for p in model.encoder.parameters() if p.requires_grad],
                   "lr": c.lr * c.encoder_lr_mult}]
        model.train()
        set_norm_eval(model.encoder)
        images, watch = self.images["train"], LossWatch(2, self.cfg.check_every)

        def loss_of(idx: Tensor) -> Tensor:
            return self._total(cand.loss(model.encoder(images[idx]), self.task.batch("train", idx, self.device)), 2)

        self._train_stage(2, groups, loss_of, len(images), c, gen, iters, watch, None)
        watch.check()
        return model.eval()

    # -------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self, cand: nn.Module, feats_of: Callable[[Tensor], list[Tensor]]) -> dict[str, float]:
        """The task's metrics on the proxy val set, predicted in batches of ``eval_batch_size`` images."""
        cand.eval()
        n, bs = len(self.images["val"]), int(self.cfg.eval_batch_size)
        preds = []
        for i in range(0, n, bs):
            idx = torch.arange(i, min(i + bs, n), device=self.device)
            preds.append(cand.predict(feats_of(idx), self.task.batch("val", idx, self.device)))
        cand.eval()
        return dict(self.task.metrics(preds, "val"))

    def _cost_once(self, arch: Arch, candidate: Callable[[], nn.Module]) -> dict[str, float]:
        """:meth:`cost_of` of ``candidate()``, counted once per distinct arch (re-evaluations: seeds, fidelity
        runs; the candidate is only asked for the first time)."""
        if arch.key not in self._costs:
            self._costs[arch.key] = self.cost_of(candidate())
        return dict(self._costs[arch.key])

    def cost(self, arch: Arch) -> dict[str, float]:
        """:meth:`cost_of` of ``arch``'s untrained candidate (:meth:`candidate`), from the same once-per-arch
        count as the results' costs: a candidate screened against a hard limit, then trained, is counted once."""
        return self._cost_once(arch, lambda: self.candidate(arch))

    def cost_of(self, cand: nn.Module) -> dict[str, float]:
        """Params (total, candidate without ``aux_heads``) and MAdds (total, candidate) at the proxy size."""
        cand.eval()
        feats = self.caches["val"].batch(torch.zeros(1, dtype=torch.long, device=self.device), self.device)
        dec_params, dec_madds = deploy_params(cand), count_madds(cand, *feats)
        if self._encoder_cost is None:
            self._encoder_cost = (count_params(self.encoder),
                                  count_madds(self.encoder, self.images["val"][:1]))
        enc_params, enc_madds = self._encoder_cost
        return {"params": float(enc_params + dec_params), "decoder_params": float(dec_params),
                "madds": float(enc_madds + dec_madds), "decoder_madds": float(dec_madds)}
