"""Two-stage candidate evaluation with early stopping (Nekrasov et al., CVPR 2019, Sec. 3).

Stage 1: the pretrained encoder is frozen and its outputs are cached once per search
(:class:`~densenas.evaluation.cache.FeatureCache`); only the candidate decoder trains, with the auxiliary
heads, knowledge distillation from cached teacher logits and Polyak (EMA) averaging of its weights.
If the stage-1 reward is below the running mean of earlier candidates' stage-1 rewards, the candidate
stops there. Otherwise stage 2 fine-tunes encoder and decoder end to end and its reward is reported.
The reward is the geometric mean of mIoU, frequency-weighted IoU and pixel accuracy on the proxy val set.
A candidate that diverges, raises or runs out of memory comes back as a failed :class:`Result`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..arch import Arch
from ..objectives import count_madds, count_params
from ..space import SearchSpace, ShapeSpec
from densenas.tasks.segmentation.losses import confusion_matrix, kd_loss, resize_logits, seg_loss, seg_metrics, seg_reward
from .cache import FeatureCache
from ..result import Result
from .common import Diverged, RunningMean, StageCfg, failure_reason, set_norm_eval


@dataclass
class TwoStageCfg:
    """Evaluator settings (``evaluator=dict(...)`` in a search config)."""

    stage1: StageCfg = field(default_factory=StageCfg)
    stage2: StageCfg | None = field(default_factory=lambda: StageCfg(iters=30, batch_size=8, lr=1e-3))
    early_stop: bool = True
    aux_weight: float = 0.4
    kd_weight: float = 0.5
    kd_temperature: float = 1.0
    polyak: float = 0.99
    eval_batch_size: int = 32
    measure_cost: bool = True


def _split(out) -> tuple[Tensor, list[Tensor]]:
    if isinstance(out, (tuple, list)):
        return out[0], list(out[1])
    return out, []


class TwoStageEvaluator(RunningMean):
    """Scores decoder architectures of ``space`` on top of a pretrained ``encoder``.

    Args:
        space: the decoder search space (``build(arch, shapes)`` gives the decoder).
        encoder: pretrained encoder returning a list of feature maps; never modified (stage 2 copies it).
        shapes: the encoder's feature shapes.
        train, val: ``(images, labels)`` tensors of the proxy splits.
        cfg: budgets and loss weights.
        teacher_logits: cached teacher logits on ``train`` images for KD (``None`` disables KD).
        device: where training runs.
        log: progress callback.
    """

    def __init__(self, space: SearchSpace, encoder: nn.Module, shapes: list[ShapeSpec],
                 train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], cfg: TwoStageCfg,
                 teacher_logits: Tensor | None = None, device: str | torch.device = "cpu",
                 cache_dir=None, log: Callable[[str], None] = print):
        self.space, self.encoder, self.shapes, self.cfg = space, encoder.eval(), shapes, cfg
        self.train_x, self.train_y = train
        self.val_x, self.val_y = val
        self.device = torch.device(device)
        self.teacher_logits = teacher_logits
        self.log = log
        t0 = time.perf_counter()
        self.train_cache = FeatureCache(encoder, self.train_x, device=self.device,
                                        path=None if cache_dir is None else f"{cache_dir}/feats_train.pt")
        self.val_cache = FeatureCache(encoder, self.val_x, device=self.device,
                                      path=None if cache_dir is None else f"{cache_dir}/feats_val.pt")
        self.cache_seconds = time.perf_counter() - t0
        self.stage1_rewards: list[float] = []
        self.num_classes = getattr(space, "num_classes", None)

    # -------------------------------------------------------------- evaluate
    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        """Train and score ``arch``; never raises for a bad candidate (returns a failed Result)."""
        t0 = time.perf_counter()
        stage = 0
        metrics: dict[str, float] = {}
        try:
            self.space.check(arch)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            decoder = self.space.build(arch, self.shapes).to(self.device)
            stage = 1
            decoder = self._stage1(decoder, gen)
            m1 = self._validate_cached(decoder)
            r1 = seg_reward(m1)
            metrics.update({f"stage1_{k}": v for k, v in m1.items()}, stage1_reward=r1)
            mean = self.running_mean
            self.stage1_rewards.append(r1)
            reward, final = r1, m1
            if self.cfg.stage2 is not None and self.cfg.stage2.iters > 0 and not (
                    self.cfg.early_stop and mean is not None and r1 < mean):
                stage = 2
                model = self._stage2(decoder, gen)
                final = self._validate_full(model)
                reward = seg_reward(final)
                metrics.update({f"stage2_{k}": v for k, v in final.items()}, stage2_reward=reward)
            metrics.update(final)
            cost = self._cost(decoder) if self.cfg.measure_cost else {}
            return Result(reward=reward, metrics=metrics, stage=stage, cost=cost,
                          wall_time=time.perf_counter() - t0)
        except Exception as e:  # one bad candidate must not end the search
            why = failure_reason(e)
        return Result.failed(why, stage=stage, wall_time=time.perf_counter() - t0, **metrics)

    # ----------------------------------------------------------------- stages
    def _loss(self, out, labels: Tensor, teacher: Tensor | None) -> Tensor:
        logits, aux = _split(out)
        loss = seg_loss(logits, labels)
        for a in aux:
            loss = loss + self.cfg.aux_weight * seg_loss(a, labels)
        if teacher is not None and self.cfg.kd_weight > 0:
            loss = loss + self.cfg.kd_weight * kd_loss(logits, teacher, labels, self.cfg.kd_temperature)
        return loss

    def _step(self, opt, sched, loss: Tensor, stage: int, it: int) -> None:
        if not torch.isfinite(loss):
            raise Diverged(f"loss is {loss.item()} at stage {stage} iter {it}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    def _stage1(self, decoder: nn.Module, gen: torch.Generator) -> nn.Module:
        c = self.cfg.stage1
        ema = AveragedModel(decoder, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.polyak),
                            use_buffers=True)
        opt = torch.optim.AdamW(decoder.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(c.iters, 1))
        decoder.train()
        n = len(self.train_cache)
        for it in range(c.iters):
            idx = torch.randint(n, (min(c.batch_size, n),), generator=gen)
            feats = self.train_cache.batch(idx, self.device)
            labels = self.train_y[idx].to(self.device)
            teacher = None if self.teacher_logits is None else self.teacher_logits[idx].to(self.device)
            self._step(opt, sched, self._loss(decoder(feats), labels, teacher), 1, it)
            ema.update_parameters(decoder)
        return ema.module

    def _stage2(self, decoder: nn.Module, gen: torch.Generator) -> nn.Module:
        c = self.cfg.stage2
        model = _EncDec(copy.deepcopy(self.encoder), copy.deepcopy(decoder)).to(self.device)
        opt = torch.optim.AdamW([
            {"params": model.decoder.parameters(), "lr": c.lr},
            {"params": model.encoder.parameters(), "lr": c.lr * c.encoder_lr_mult}],
            weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(c.iters, 1))
        model.train()
        set_norm_eval(model.encoder)
        n = len(self.train_x)
        for it in range(c.iters):
            idx = torch.randint(n, (min(c.batch_size, n),), generator=gen)
            out = model(self.train_x[idx].to(self.device))
            self._step(opt, sched, self._loss(out, self.train_y[idx].to(self.device), None), 2, it)
        return model.eval()

    # -------------------------------------------------------------- validation
    @torch.no_grad()
    def _confusion(self, predict: Callable[[slice], Tensor]) -> dict[str, float]:
        k = self._classes()
        conf = torch.zeros(k, k, dtype=torch.long)
        bs = self.cfg.eval_batch_size
        for i in range(0, len(self.val_y), bs):
            labels = self.val_y[i:i + bs]
            logits = resize_logits(predict(slice(i, i + bs)).float().cpu(), labels.shape[-2:])
            if not torch.isfinite(logits).all():
                raise Diverged("non-finite logits at validation")
            conf += confusion_matrix(logits.argmax(1), labels, k)
        return seg_metrics(conf)

    def _classes(self) -> int:
        if self.num_classes is None:
            raise ValueError("the search space must expose num_classes")
        return int(self.num_classes)

    def _validate_cached(self, decoder: nn.Module) -> dict[str, float]:
        decoder.eval()
        idx = torch.arange(len(self.val_y))
        return self._confusion(lambda s: decoder(self.val_cache.batch(idx[s], self.device)))

    def _validate_full(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        return self._confusion(lambda s: model(self.val_x[s].to(self.device)))

    def _cost(self, decoder: nn.Module) -> dict[str, float]:
        model = _EncDec(self.encoder, decoder).eval()
        x = self.val_x[:1].to(self.device)
        dec = deploy_params(decoder)
        return {"params": float(count_params(self.encoder) + dec), "decoder_params": float(dec),
                "madds": float(count_madds(model, x))}


def deploy_params(decoder: nn.Module) -> int:
    """Parameters used at inference: the training-only auxiliary heads (``aux_heads``) excluded."""
    aux = getattr(decoder, "aux_heads", None)
    return count_params(decoder) - (count_params(aux) if isinstance(aux, nn.Module) else 0)


class _EncDec(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: Tensor):
        return self.decoder(self.encoder(x))

