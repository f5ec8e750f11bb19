"""The one proxy trainer (Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation
Models via Auxiliary Cells", CVPR 2019) with the segmentation and detection candidates: its options,
early stopping, failures, resume. The trainer with the real detection task: ``test_det_evaluator.py``.
Tiny images, random (not pretrained) encoders, a few iterations, CPU only."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from densenas.backbones.common import named_shapes
from densenas.backbones.mobilenet_v2 import MobileNetV2Encoder
from densenas.decoders.auxcell import AuxCellSpace
from densenas.evaluation.common import StageCfg
from densenas.evaluation.proxy import ProxyCfg, ProxyTrainer
from densenas.result import Result
from densenas.tasks.segmentation.candidate import SegCandidate, SegTargets, build_seg_candidate

torch.set_num_threads(1)
K, SIZE = 3, 64


class SegToyTask:
    """The segmentation side of a Task, as the trainer sees it."""

    def __init__(self, train, val, teacher=None, kd_temperature=1.0):
        self.x = {"train": train[0], "val": val[0]}
        self.targets = SegTargets(train[1], val[1], K, teacher)
        self.kd_temperature = kd_temperature

    def images(self, split):
        return self.x[split]

    def build_candidate(self, space, arch, shapes):
        return build_seg_candidate(space, arch, shapes, kd_temperature=self.kd_temperature)

    def batch(self, split, idx, device):
        return self.targets.batch(split, idx, device)

    def metrics(self, preds, split):
        return self.targets.metrics(preds, split)

    def reward(self, metrics):
        return self.targets.reward(metrics)


@pytest.fixture(scope="module")
def seg():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, SIZE, SIZE, generator=g)
    y = torch.randint(K, (10, SIZE, SIZE), generator=g)
    y[:, :4, :4] = 255
    teacher = torch.randn(6, K, SIZE // 4, SIZE // 4, generator=g)
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder(pretrained=False).eval()
    return (x[:6], y[:6]), (x[6:], y[6:]), teacher, encoder, named_shapes(encoder.feature_shapes())


def _space():
    return AuxCellSpace(K, width=8, num_cells=2)


def _cfg(**kw) -> ProxyCfg:
    base = dict(stage1=StageCfg(iters=3, batch_size=4, lr=3e-3), stage2=StageCfg(iters=1, batch_size=2, lr=1e-3),
                eval_batch_size=3, measure_cost=False)
    return ProxyCfg(**{**base, **kw})


def _trainer(seg, teacher=True, **kw):
    train, val, t, encoder, shapes = seg
    space = _space()
    task = SegToyTask(train, val, t if teacher else None)
    return space, ProxyTrainer(task, space, encoder, shapes, _cfg(**kw), log=lambda s: None)


# ---------------------------------------------------------------------------------------- the trainer
def test_config_defaults_and_validation():
    cfg = ProxyCfg()
    assert (cfg.sampling, cfg.grad_clip, cfg.polyak, cfg.polyak_cap, cfg.eval_batch_size) == \
        ("without_replacement", None, 0.99, True, 16)
    assert cfg.ema_decay(80) == pytest.approx(0.95) and cfg.ema_decay(1000) == 0.99
    assert cfg.ema_decay(2) == pytest.approx(0.5)  # max(iters, 8)
    assert ProxyCfg(polyak_cap=False).ema_decay(80) == 0.99 and ProxyCfg(polyak=0.0).ema_decay(80) == 0.0
    assert ProxyCfg(stage1=dict(iters=5)).stage1 == StageCfg(iters=5)
    for bad, match in ((dict(sampling="bootstrap"), "sampling"), (dict(polyak=1.0), "polyak"),
                       (dict(grad_clip=0.0), "grad_clip"), (dict(eval_batch_size=0), "eval_batch_size")):
        with pytest.raises(ValueError, match=match):
            ProxyCfg(**bad)


def test_sampling_rules(seg):
    _, tr = _trainer(seg, sampling="without_replacement")
    g = torch.Generator().manual_seed(3)
    draws = [tr._indices(6, 4, g) for _ in range(50)]
    assert all(len(set(d.tolist())) == 4 for d in draws)
    assert torch.equal(draws[0], torch.randperm(6, generator=torch.Generator().manual_seed(3))[:4])
    assert tr._indices(6, 16, g).sort().values.tolist() == list(range(6))  # the batch is every image
    _, tr = _trainer(seg, sampling="with_replacement")
    g = torch.Generator().manual_seed(3)
    draws = [tr._indices(6, 4, g) for _ in range(50)]
    assert any(len(set(d.tolist())) < 4 for d in draws)  # duplicates happen
    assert torch.equal(draws[0], torch.randint(6, (4,), generator=torch.Generator().manual_seed(3)))


def test_loss_terms_weighted_and_kd_only_in_stage1(seg):
    _, tr = _trainer(seg, aux_weight=0.25, kd_weight=0.5)
    t = {k: torch.tensor(v) for k, v in dict(loss_seg=1.0, loss_aux0=2.0, loss_aux1=4.0, loss_kd=8.0).items()}
    assert tr._total(t, 1).item() == pytest.approx(1.0 + 0.5 + 1.0 + 4.0)
    assert tr._total(t, 2).item() == pytest.approx(2.5)
    _, tr = _trainer(seg, kd_weight=0.0)
    assert tr._total(t, 1).item() == pytest.approx(1.0 + 0.4 * 6)
    with pytest.raises(ValueError, match="'acc'"):
        tr._total({"acc": torch.tensor(1.0)}, 1)
    with pytest.raises(ValueError, match="no term"):
        tr._total({"loss_kd": torch.tensor(1.0)}, 2)


def test_seg_candidate_contract(seg):
    train, val, teacher, encoder, shapes = seg
    space = _space()
    cand = build_seg_candidate(space, space.default_arch(), shapes)
    assert isinstance(cand, SegCandidate) and cand.aux_heads is not None
    feats = encoder(train[0][:2])
    targets = SegTargets(train[1], val[1], K, teacher)
    cand.train()
    losses = cand.loss(feats, targets.batch("train", torch.tensor([0, 1]), "cpu"))
    assert list(losses) == ["loss_seg"] + [f"loss_aux{i}" for i in range(len(cand.aux_heads))] + ["loss_kd"]
    assert "teacher" not in targets.batch("val", torch.tensor([0]), "cpu")
    cand.eval()
    pred = cand.predict(feats, {"labels": train[1][:2]})
    assert pred.shape == (2, SIZE, SIZE) and pred.dtype == torch.long
    assert torch.is_tensor(cand(*feats))  # eval forward: logits only (what MAdds count)
    with pytest.raises(ValueError, match="cover 2 images"):
        targets.metrics([pred], "val")


def test_evaluate_two_stages_with_cost(seg):
    space, tr = _trainer(seg, early_stop=False, measure_cost=True)
    r = tr.evaluate(space.default_arch(), seed=0)
    assert r.ok, r.error
    assert r.stage == 2 and r.reward == r.metrics["stage2_reward"] == tr.task.reward(r.metrics)
    for k in ("miou", "stage1_miou", "stage1_reward", "stage2_pixel_acc", "stage1_loss_first", "stage1_loss_last"):
        assert k in r.metrics and math.isfinite(r.metrics[k]), k
    assert 0 < r.cost["decoder_params"] < r.cost["params"] and 0 < r.cost["decoder_madds"] < r.cost["madds"]
    cand = build_seg_candidate(space, space.default_arch(), seg[4])
    aux = sum(p.numel() for p in cand.aux_heads.parameters())
    assert aux > 0 and r.cost["decoder_params"] == sum(p.numel() for p in cand.parameters()) - aux
    assert tr.stage1_rewards == [r.metrics["stage1_reward"]]


def test_early_stopping_skips_stage2_below_running_mean(seg):
    space, tr = _trainer(seg)
    arch = space.sample(np.random.default_rng(1))
    tr.stage1_rewards = [1e9]  # nobody beats this mean: stage 2 is skipped
    r = tr.evaluate(arch, seed=0)
    assert r.ok and r.stage == 1 and "stage2_reward" not in r.metrics
    assert r.reward == r.metrics["stage1_reward"] and len(tr.stage1_rewards) == 2
    tr.stage1_rewards = [-1e9]  # everybody beats this one: stage 2 runs
    r = tr.evaluate(arch, seed=0)
    assert r.ok and r.stage == 2 and r.reward == r.metrics["stage2_reward"]
    tr.cfg.early_stop = False
    tr.stage1_rewards = [1e9]
    assert tr.evaluate(arch, seed=0).stage == 2


def test_diverging_candidate_fails_and_trainer_keeps_working(seg):
    space, tr = _trainer(seg, stage1=StageCfg(iters=4, batch_size=4, lr=1e30))
    arch = space.default_arch()
    r = tr.evaluate(arch)
    assert r.status == "failed" and r.reward is None and r.error.startswith("diverged"), r.error
    assert r.stage == 1 and tr.stage1_rewards == []
    r = tr.evaluate(arch.replace(**{"cell0.in0": 99}))
    assert r.status == "failed" and "InvalidArch" in r.error and r.stage == 0
    tr.cfg.stage1 = StageCfg(iters=2, batch_size=4, lr=3e-3)
    r = tr.evaluate(arch)
    assert r.ok and tr.stage1_rewards == [r.metrics["stage1_reward"]]


def test_restore_rebuilds_running_mean(seg):
    _, tr = _trainer(seg)
    tr.restore([Result(reward=1.0, metrics={"stage1_reward": 1.0}), Result.failed("boom", stage1_reward=3.0),
                Result.failed("early"), None])
    assert tr.running_mean == pytest.approx(2.0)
    tr.restore([])
    assert tr.running_mean is None


def test_polyak_zero_scores_the_last_weights(seg):
    space, tr = _trainer(seg, polyak=0.0, stage2=None)
    cand = build_seg_candidate(space, space.default_arch(), seg[4])
    out, trace = tr._stage1(cand, torch.Generator().manual_seed(0), 2)
    assert out is cand and len(trace) == 2
    tr.cfg.polyak = 0.9
    out, _ = tr._stage1(cand, torch.Generator().manual_seed(0), 2)
    assert out is not cand and type(out) is SegCandidate  # the AveragedModel's copy
    tr.cfg.polyak = 0.0
    r = tr.evaluate(space.default_arch(), seed=0)
    assert r.ok and r.stage == 1


def test_train_longer_leaves_running_mean_alone(seg):
    space, tr = _trainer(seg)
    tr.stage1_rewards = [5.0]
    out = tr.train_longer(space.sample(np.random.default_rng(4)), iters=4, seed=1)
    assert {"miou", "fwiou", "pixel_acc", "reward", "stage", "seconds"} <= set(out) and out["stage"] == 2.0
    assert out["reward"] == pytest.approx(tr.task.reward(out))
    assert tr.stage1_rewards == [5.0]


def test_core_trainer_imports_no_task_code():
    code = ("import sys, densenas.evaluation.proxy; "
            "bad = [m for m in sys.modules if m.startswith(('densenas.tasks', 'densenas.decoders', "
            "'densenas.datasets'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------- detection
@pytest.fixture(scope="module")
def det(tmp_path_factory):
    pytest.importorskip("mmdet")
    pytest.importorskip("pycocotools")
    from densenas.datasets.detfolder import DetectionFolder
    from densenas.datasets.proxy_det import build_proxy_coco

    root = tmp_path_factory.mktemp("proxy_coco")
    build_proxy_coco(root, num_train=8, num_val=4, size=SIZE, num_classes=2, seed=0, log=None)
    train = DetectionFolder(root, "train").load_arrays(SIZE)
    val = DetectionFolder(root, "val").load_arrays(SIZE)
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder((6, 13, 17), pretrained=False).eval()
    return train, val, encoder, named_shapes(encoder.feature_shapes())


def _det_space(kind):
    from densenas.decoders.nasfcos import NASFCOSSpace
    from densenas.decoders.nasfpn import NASFPNSpace

    if kind == "nasfcos":
        return NASFCOSSpace(num_classes=2, part="fpn", width=16), {}
    return NASFPNSpace(out_channels=16), dict(detector="retinanet", stacked_convs=1)


def test_det_candidate_and_targets(det):
    train, val, encoder, shapes = det
    from densenas.tasks.detection.candidate import DetPrediction, DetTargets, NeckHead, build_det_candidate

    space, opts = _det_space("nasfcos")
    nh = build_det_candidate(space, space.sample(np.random.default_rng(0)), shapes, **opts)
    assert isinstance(nh, NeckHead) and nh.head.test_cfg["score_thr"] == 0.001
    targets = DetTargets(train, val, 2, "ap")
    idx = torch.tensor([0, 1])
    feats = encoder(val[0][idx])
    nh.train()
    assert list(nh.loss(feats, targets.batch("val", idx, "cpu"))) == ["loss_det"]
    with torch.no_grad():
        p = nh.eval().predict(feats, targets.batch("val", idx, "cpu"))
    assert isinstance(p, DetPrediction) and p.num_images == 2 and len(p.detections) == 2 and not nh.training
    with pytest.raises(ValueError, match="reward"):
        DetTargets(train, val, 2, "miou")


def test_graph_path_bookkeeping_trains_as_the_eager_loop(seg):
    """``cuda_graphs="emulate"`` runs the CUDA-graph path's bookkeeping on the CPU (indices drawn up front,
    tensor learning rates filled from the cosine closed form, a static index buffer, fused AdamW): the same
    candidate, same losses, same reward as the eager loop with ``CosineAnnealingLR``."""
    space, eager = _trainer(seg, early_stop=False, cuda_graphs="off", stage1=StageCfg(iters=7, batch_size=4, lr=3e-3),
                            stage2=StageCfg(iters=5, batch_size=2, lr=1e-3, encoder_lr_mult=0.5))
    _, emul = _trainer(seg, early_stop=False, cuda_graphs="emulate",
                       stage1=StageCfg(iters=7, batch_size=4, lr=3e-3),
                       stage2=StageCfg(iters=5, batch_size=2, lr=1e-3, encoder_lr_mult=0.5))
    arch = space.sample(np.random.default_rng(2))
    a, b = eager.evaluate(arch, seed=3), emul.evaluate(arch, seed=3)
    assert a.ok and b.ok and a.stage == b.stage == 2, (a.error, b.error)
    for key in ("stage1_loss_first", "stage1_loss_last", "stage1_reward", "stage2_reward"):
        assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-4, abs=1e-5), key
    assert emul._graphs_failed == {}


def test_cosine_lr_closed_form_is_the_schedulers():
    from densenas.evaluation.graphed import cosine_lr, graphs_wanted

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 11)
    for t in range(11):
        assert cosine_lr(0.3, t, 11) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        opt.step()
        sched.step()
    assert graphs_wanted("auto", torch.device("cpu")) is None and graphs_wanted("off", torch.device("cuda")) is None
    assert graphs_wanted("auto", torch.device("cuda")) == "capture"
    with pytest.raises(ValueError, match="evaluator.cuda_graphs"):
        ProxyCfg(cuda_graphs="always")
