"""Two-stage evaluation of detection necks and heads (NAS-FCOS / NAS-FPN searches inside mmdet).

The detection twin of :mod:`densenas.evaluation.two_stage`, following the early-stopping evaluator of
Nekrasov et al. ("Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary
Cells", CVPR 2019): stage 1 trains only the candidate's neck and head on frozen, cached backbone features
(:class:`~densenas.evaluation.cache.FeatureCache`) with Polyak (EMA) averaging of their weights; a candidate
whose stage-1 reward is below the running mean of earlier stage-1 rewards stops there, the others are
fine-tuned end to end in stage 2 (backbone BatchNorm frozen, backbone lr scaled down).

Rewards on the proxy validation set, both always measured (``Result.metrics``), one chosen as the reward:

* ``neg_loss``: minus the sum of the detection losses, as NAS-FCOS (Wang et al., "NAS-FCOS: Fast Neural
  Architecture Search for Object Detection", CVPR 2020) rewards its candidates;
* ``ap``: COCO box AP, the proxy-task reward of NAS-FPN (Ghiasi, Lin, Le, CVPR 2019).

Candidates are mmdet single-stage detectors built by ``model_fn(arch)`` (:func:`detector_model_fn` builds
one from a :class:`~densenas.decoders.nasfcos.NASFCOSSpace` or :class:`~densenas.decoders.nasfpn.NASFPNSpace`
arch); the evaluator calls ``detector.neck(feats)`` and ``detector.bbox_head.loss/predict`` directly, which
is what ``SingleStageDetector.loss/predict`` do after ``extract_feat``. The detector's own backbone is
never used: the evaluator's ``encoder`` (whose features are cached) is the backbone of stage 2.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..arch import Arch
from ..objectives import count_madds, count_params
from ..space import SearchSpace
from densenas.tasks.detection.metrics import coco_ap, det_loss_total, pack_det_samples
from .cache import FeatureCache
from ..result import Result
from .common import Diverged, RunningMean, StageCfg, failure_reason, set_norm_eval

DetSplit = tuple[Tensor, Sequence[Tensor], Sequence[Tensor]]
REWARDS = ("neg_loss", "ap")


@dataclass
class DetEvalCfg:
    """Detection evaluator settings (``evaluator=dict(...)`` in a detection search config).

    Attributes:
        stage1: neck+head training on cached features (``encoder_lr_mult`` unused).
        stage2: end-to-end fine-tuning (``None`` or ``iters=0`` disables it).
        early_stop: skip stage 2 when the stage-1 reward is below the running mean.
        reward: ``"neg_loss"`` (NAS-FCOS) or ``"ap"`` (COCO AP@[.5:.95], NAS-FPN).
        polyak: EMA decay of the stage-1 weights; capped at ``1 - 4 / max(iters, 8)`` so short runs average over
            their last quarter rather than their initialisation; ``0`` disables averaging.
        grad_clip: max gradient norm (``None``: no clipping).
        eval_batch_size: images per validation batch.
        score_thr: detection score threshold at validation (low, as in COCO evaluation; overrides the
            detector's ``test_cfg.score_thr``; ``None`` keeps it).
        measure_cost: record params and MAdds in ``Result.cost``.
    """

    stage1: StageCfg = field(default_factory=lambda: StageCfg(iters=80, batch_size=16, lr=2e-3))
    stage2: StageCfg | None = field(default_factory=lambda: StageCfg(iters=20, batch_size=8, lr=5e-4))
    early_stop: bool = True
    reward: str = "neg_loss"
    polyak: float = 0.99
    grad_clip: float | None = 35.0
    eval_batch_size: int = 16
    score_thr: float | None = 0.001
    measure_cost: bool = True

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {list(REWARDS)}, got {self.reward!r}")
        if not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"polyak must be in [0, 1), got {self.polyak}")


@contextlib.contextmanager
def _quiet_mmengine():
    """Silence mmengine's per-parameter ``init_weights`` report (INFO lines on the current logger)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def build_detector(model_cfg: dict[str, Any]) -> nn.Module:
    """``mmdet.registry.MODELS.build`` in mmdet's scope (mmdet's modules and ours registered first)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    import densenas.decoders.mmdet_adapters  # noqa: F401  (registers NAS-FCOS neck/head)
    import densenas.decoders.nasfpn_mmdet  # noqa: F401  (registers the NAS-FPN neck)

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(ConfigDict(model_cfg))


def detector_model_fn(space: SearchSpace, num_classes: int | None = None, *,
                      in_channels: Sequence[int] = (32, 96, 320), out_indices: Sequence[int] = (6, 13, 17),
                      detector: str = "fcos", stacked_convs: int = 4,
                      feat_channels: int | None = None) -> Callable[[Arch], nn.Module]:
    """``model_fn(arch) -> detector`` for a NAS-FCOS or NAS-FPN space (backbone not pretrained: unused).

    Args:
        space: a :class:`~densenas.decoders.nasfcos.NASFCOSSpace` (FCOS with its searched FPN and head;
            the fixed part from the space) or a :class:`~densenas.decoders.nasfpn.NASFPNSpace`.
        num_classes: classes (default the space's ``num_classes``; required for NAS-FPN).
        in_channels: channels of the backbone levels.
        out_indices: MobileNetV2 blocks giving those levels.
        detector: NAS-FPN only: ``"retinanet"`` or ``"fcos"`` head.
        stacked_convs: NAS-FPN only: convs per head tower.
        feat_channels: NAS-FPN only: head width (default the pyramid width).
    """
    from densenas.decoders.mmdet_adapters import nasfcos_detector_cfg
    from densenas.decoders.nasfcos import NASFCOSSpace
    from densenas.decoders.nasfpn import NASFPNSpace
    from densenas.decoders.nasfpn_mmdet import nasfpn_model_dict

    k = getattr(space, "num_classes", None) if num_classes is None else num_classes
    if k is None:
        raise ValueError(f"num_classes is required for space {space.name!r}")
    if isinstance(space, NASFCOSSpace):
        def model_fn(arch: Arch) -> nn.Module:
            full = space.full_arch(arch)
            return build_detector(nasfcos_detector_cfg(
                full, full, int(k), out_indices=out_indices, in_channels=in_channels, width=space.width,
                head_width=space.head_width, pretrained=False, shared_position=space.shared_position))
    elif isinstance(space, NASFPNSpace):
        def model_fn(arch: Arch) -> nn.Module:
            return build_detector(nasfpn_model_dict(
                arch, int(k), detector, in_channels=in_channels, out_channels=space.out_channels,
                stack=space.stack, pretrained=False, out_indices=out_indices, feat_channels=feat_channels,
                stacked_convs=stacked_convs, num_outs=len(space.levels)))
    else:
        raise TypeError(f"no detector for space {type(space).__name__}; use NASFCOSSpace or NASFPNSpace")
    return model_fn


class NeckHead(nn.Module):
    """A detector's neck and dense head, fed backbone features (the part stage 1 trains)."""

    def __init__(self, neck: nn.Module, head: nn.Module):
        super().__init__()
        self.neck, self.head = neck, head

    def loss(self, feats: Sequence[Tensor], samples: list) -> dict[str, Any]:
        return self.head.loss(tuple(self.neck(list(feats))), samples)

    def predict(self, feats: Sequence[Tensor], samples: list) -> list:
        return self.head.predict(tuple(self.neck(list(feats))), samples, rescale=False)

    def forward(self, *feats: Tensor) -> tuple[Tensor, ...]:
        """Raw head outputs, flattened (for MAdds counting)."""
        outs = self.head(tuple(self.neck(list(feats))))
        return tuple(t for level in outs for t in level)


class DetectionEvaluator(RunningMean):
    """Scores detection archs (``space``) with ``model_fn`` detectors on top of a pretrained ``encoder``.

    Args:
        space: the search space (``check(arch)``).
        model_fn: ``arch -> mmdet single-stage detector`` with ``neck`` and ``bbox_head``.
        encoder: pretrained backbone returning the levels the necks expect; never modified.
        train, val: ``(images normalised N x 3 x H x W, [boxes n_i x 4 xyxy], [labels n_i])`` (what
            :meth:`~densenas.datasets.detfolder.DetectionFolder.load_arrays` returns).
        cfg: budgets and reward.
        device: where training runs.
        cache_dir: where the backbone features are stored between runs (``None``: memory only).
        log: progress callback.
    """

    def __init__(self, space: SearchSpace, model_fn: Callable[[Arch], nn.Module], encoder: nn.Module,
                 train: DetSplit, val: DetSplit, cfg: DetEvalCfg | None = None,
                 device: str | torch.device = "cpu", cache_dir=None, log: Callable[[str], None] = print):
        self.space, self.model_fn, self.encoder = space, model_fn, encoder.eval()
        self.cfg = cfg or DetEvalCfg()
        self.device, self.log = torch.device(device), log
        self.train_x, self.val_x = train[0], val[0]
        self.val_gt = (list(val[1]), list(val[2]))
        self.img_shape = shape = tuple(int(s) for s in self.train_x.shape[-2:])
        self.train_samples = pack_det_samples(train[1], train[2], shape, device=self.device)
        self.val_samples = pack_det_samples(val[1], val[2], shape, device=self.device)
        t0 = time.perf_counter()
        self.train_cache, self.val_cache = (
            FeatureCache(encoder, x, device=self.device,
                         path=None if cache_dir is None else f"{cache_dir}/det_feats_{name}.pt")
            for name, x in (("train", self.train_x), ("val", self.val_x)))
        self.cache_seconds = time.perf_counter() - t0
        self.stage1_rewards: list[float] = []
        self._backbone_cost: tuple[int, int] | None = None

    # -------------------------------------------------------------- evaluate
    def evaluate(self, arch: Arch, seed: int = 0) -> Result:
        """Train and score ``arch``; never raises for a bad candidate (returns a failed Result)."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        progress = {"stage": 0}
        try:
            reward, nh = self._run(arch, seed, self.cfg.stage1.iters, self._stage2_iters(), metrics,
                                   progress, early_stop=self.cfg.early_stop, record=True)
            cost = self._cost(nh) if self.cfg.measure_cost else {}
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
            ``ap``, ``ap50``, ``ap75``, ``neg_loss`` on the proxy val set after the last stage, ``stage``
            and ``seconds``.

        Raises:
            Diverged: a non-finite loss (any other error propagates too).
        """
        t0 = time.perf_counter()
        if stage2_iters is None:
            s1 = max(self.cfg.stage1.iters, 1)
            stage2_iters = round(iters * self._stage2_iters() / s1)
        metrics: dict[str, float] = {}
        progress = {"stage": 0}
        self._run(arch, seed, int(iters), int(stage2_iters), metrics, progress, early_stop=False, record=False)
        return {**{k: metrics[k] for k in ("ap", "ap50", "ap75", "neg_loss")},
                "stage": float(progress["stage"]), "seconds": time.perf_counter() - t0}

    def _stage2_iters(self) -> int:
        return 0 if self.cfg.stage2 is None else int(self.cfg.stage2.iters)

    def _run(self, arch: Arch, seed: int, iters1: int, iters2: int, metrics: dict[str, float],
             progress: dict[str, int], early_stop: bool, record: bool) -> tuple[float, NeckHead]:
        """Stage 1, the early-stopping test, stage 2; fills ``metrics``; returns (reward, neck+head)."""
        self.space.check(arch)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        nh = self._build(arch)
        progress["stage"] = 1
        nh, trace = self._stage1(nh, gen, iters1)
        m1 = self._validate(nh, lambda idx: self.val_cache.batch(idx, self.device))
        r1 = m1[self.cfg.reward]
        k = max(1, min(5, len(trace) // 4))
        metrics.update({f"stage1_{n}": v for n, v in m1.items()}, stage1_reward=r1,
                       stage1_loss_first=sum(trace[:k]) / k, stage1_loss_last=sum(trace[-k:]) / k)
        mean = self.running_mean
        if record:
            self.stage1_rewards.append(r1)
        reward, final = r1, m1
        if iters2 > 0 and not (early_stop and mean is not None and r1 < mean):
            progress["stage"] = 2
            model = self._stage2(nh, gen, iters2)
            final = self._validate(model.neck_head, lambda i: model.backbone(self.val_x[i].to(self.device)))
            reward = final[self.cfg.reward]
            metrics.update({f"stage2_{n}": v for n, v in final.items()}, stage2_reward=reward)
            nh = model.neck_head
        metrics.update(final)
        return reward, nh

    # ----------------------------------------------------------------- stages
    def _build(self, arch: Arch) -> NeckHead:
        det = self.model_fn(arch)
        if not (hasattr(det, "neck") and hasattr(det, "bbox_head")):
            raise TypeError(f"model_fn must return an mmdet detector with neck and bbox_head, "
                            f"got {type(det).__name__}")
        with _quiet_mmengine():
            for part in (p for p in (det.neck, det.bbox_head) if hasattr(p, "init_weights")):
                part.init_weights()
        head = det.bbox_head
        if self.cfg.score_thr is not None and getattr(head, "test_cfg", None) is not None:
            head.test_cfg["score_thr"] = self.cfg.score_thr
        return NeckHead(det.neck, head).to(self.device)

    def _step(self, opt, sched, params, loss: Tensor, stage: int, it: int) -> float:
        if not torch.isfinite(loss):
            raise Diverged(f"loss is {loss.item()} at stage {stage} iter {it}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()
        sched.step()
        return float(loss.detach())

    def _batch(self, n: int, bs: int, gen: torch.Generator) -> list[int]:
        return torch.randperm(n, generator=gen)[:min(bs, n)].tolist()

    def _stage1(self, nh: NeckHead, gen: torch.Generator, iters: int) -> tuple[NeckHead, list[float]]:
        c = self.cfg.stage1
        decay = min(self.cfg.polyak, 1.0 - 4.0 / max(iters, 8))
        ema = AveragedModel(nh, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) \
            if self.cfg.polyak > 0 else None
        params = [p for p in nh.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        nh.train()
        trace = []
        for it in range(iters):
            idx = self._batch(len(self.train_cache), c.batch_size, gen)
            feats = self.train_cache.batch(torch.tensor(idx), self.device)
            loss = det_loss_total(nh.loss(feats, [self.train_samples[i] for i in idx]))
            trace.append(self._step(opt, sched, params, loss, 1, it))
            if ema is not None:
                ema.update_parameters(nh)
        return (ema.module if ema is not None and iters > 0 else nh), trace

    def _stage2(self, nh: NeckHead, gen: torch.Generator, iters: int) -> nn.ModuleDict:
        c = self.cfg.stage2 or StageCfg(iters=iters)
        model = nn.ModuleDict(dict(backbone=copy.deepcopy(self.encoder), neck_head=nh)).to(self.device)
        groups = [{"params": [p for p in nh.parameters() if p.requires_grad], "lr": c.lr},
                  {"params": [p for p in model.backbone.parameters() if p.requires_grad],
                   "lr": c.lr * c.encoder_lr_mult}]
        opt = torch.optim.AdamW(groups, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
        model.train()
        set_norm_eval(model.backbone)
        params = [p for g in groups for p in g["params"]]
        for it in range(iters):
            idx = self._batch(len(self.train_x), c.batch_size, gen)
            feats = model.backbone(self.train_x[idx].to(self.device))
            loss = det_loss_total(nh.loss(feats, [self.train_samples[i] for i in idx]))
            self._step(opt, sched, params, loss, 2, it)
        return model.eval()

    # -------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self, nh: NeckHead, feats_of: Callable[[Tensor], list[Tensor]]) -> dict[str, float]:
        """``neg_loss``, ``ap``, ``ap50``, ``ap75`` on the proxy val set.

        The loss runs in training mode with every BatchNorm in eval mode: eval mode for these heads, but
        keeping the training-only output scaling its loss expects (FCOS ``norm_on_bbox``).
        """
        n, bs = len(self.val_x), max(1, self.cfg.eval_batch_size)
        total, preds = 0.0, []
        for i in range(0, n, bs):
            idx = torch.arange(i, min(i + bs, n))
            feats = feats_of(idx)
            samples = [self.val_samples[j] for j in idx.tolist()]
            nh.train()
            set_norm_eval(nh)
            loss = det_loss_total(nh.loss(feats, samples))
            if not torch.isfinite(loss):
                raise Diverged(f"validation loss is {loss.item()}")
            total += float(loss) * len(idx)
            nh.eval()
            preds += nh.predict(feats, samples)
        nh.eval()
        ap = coco_ap(preds, self.val_gt, int(getattr(nh.head, "num_classes")), [self.img_shape] * n)
        return {"neg_loss": -total / n, **ap}

    def _cost(self, nh: NeckHead) -> dict[str, float]:
        """Params (total and neck+head) and MAdds (total and neck+head) at the proxy image size."""
        nh.eval()
        feats = self.val_cache.batch(torch.tensor([0]), self.device)
        dec_params, dec_madds = count_params(nh), count_madds(nh, *feats)
        if self._backbone_cost is None:
            self._backbone_cost = (count_params(self.encoder),
                                   count_madds(self.encoder, self.val_x[:1].to(self.device)))
        enc_params, enc_madds = self._backbone_cost
        return {"params": float(enc_params + dec_params), "decoder_params": float(dec_params),
                "madds": float(enc_madds + dec_madds), "decoder_madds": float(dec_madds)}
