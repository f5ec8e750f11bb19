"""Detection task helpers and the two-stage detection evaluator (NAS-FCOS / NAS-FPN) on a tiny proxy set."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

from densenas.backbones import MobileNetV2Encoder  # noqa: E402
from densenas.datasets.detfolder import DetectionFolder  # noqa: E402
from densenas.datasets.proxy_det import build_proxy_coco  # noqa: E402
from densenas.decoders.nasfcos import NASFCOSSpace  # noqa: E402
from densenas.decoders.nasfpn import NASFPNSpace  # noqa: E402
from densenas.evaluation.detection import DetEvalCfg, DetectionEvaluator, detector_model_fn  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.evaluation.two_stage import StageCfg  # noqa: E402
from densenas.tasks.detection.metrics import (_kendall_tau_b, coco_ap, det_loss_reward, det_loss_total,  # noqa: E402
                                      kendall_tau, pack_det_samples)

torch.set_num_threads(1)
SIZE, W = 64, 16


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy_coco")
    classes = build_proxy_coco(root, num_train=8, num_val=4, size=SIZE, num_classes=2, seed=0, log=None)
    train = DetectionFolder(root, "train").load_arrays(SIZE)
    val = DetectionFolder(root, "val").load_arrays(SIZE)
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder((6, 13, 17), pretrained=False).eval()
    return classes, train, val, encoder


def _space(kind: str):
    if kind == "nasfcos":
        space = NASFCOSSpace(num_classes=2, part="fpn", width=W)
        return space, detector_model_fn(space)
    space = NASFPNSpace(out_channels=W)
    return space, detector_model_fn(space, 2, detector="retinanet", stacked_convs=1)


def _cfg(**kw) -> DetEvalCfg:
    base = dict(stage1=StageCfg(iters=3, batch_size=4, lr=2e-3), stage2=StageCfg(iters=1, batch_size=2, lr=5e-4),
                eval_batch_size=4)
    return DetEvalCfg(**{**base, **kw})


def _evaluator(proxy, kind="nasfcos", model_fn=None, **kw):
    _, train, val, encoder = proxy
    space, fn = _space(kind)
    return space, DetectionEvaluator(space, model_fn or fn, encoder, train, val, _cfg(**kw), log=lambda s: None)


# ------------------------------------------------------------------ task helpers
def test_pack_samples_and_loss_reward():
    samples = pack_det_samples([torch.tensor([[1.0, 2.0, 10.0, 12.0]]), torch.zeros(0, 4)],
                               [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], (32, 48))
    assert len(samples) == 2 and samples[0].img_shape == (32, 48) and samples[0].pad_shape == (32, 48)
    assert samples[0].scale_factor == (1.0, 1.0) and samples[1].gt_instances.bboxes.shape == (0, 4)
    losses = {"loss_cls": [torch.tensor(1.0), torch.tensor(2.0)], "loss_bbox": torch.tensor(0.5), "acc": 9.0}
    assert det_loss_total(losses).item() == pytest.approx(3.5)
    assert det_loss_reward(losses) == pytest.approx(-3.5)
    with pytest.raises(ValueError):
        pack_det_samples([torch.zeros(2, 4)], [torch.zeros(1, dtype=torch.long)], (8, 8))


def test_coco_ap_perfect_shifted_and_wrong_class():
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[20.0, 20.0, 40.0, 50.0]])]
    gt_labels = [torch.tensor([0]), torch.tensor([1])]
    perfect = [dict(bboxes=b, scores=torch.ones(1), labels=lab) for b, lab in zip(gt_boxes, gt_labels)]
    assert coco_ap(perfect, (gt_boxes, gt_labels), 2) == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
    # Shifted by 2 px: IoU = 80 / 120 = 2/3, a match at the thresholds 0.50, 0.55, 0.60, 0.65 of ten.
    shifted = [dict(bboxes=torch.tensor([[2.0, 0.0, 12.0, 10.0]]), scores=torch.ones(1), labels=torch.tensor([0]))]
    ap = coco_ap(shifted, ([gt_boxes[0]], [gt_labels[0]]), ["a", "b"])
    assert ap == pytest.approx({"ap": 0.4, "ap50": 1.0, "ap75": 0.0})
    wrong = [dict(bboxes=gt_boxes[0], scores=torch.ones(1), labels=torch.tensor([1]))]
    assert coco_ap(wrong, ([gt_boxes[0]], [gt_labels[0]]), 2)["ap"] == 0.0
    empty = [dict(bboxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))]
    assert coco_ap(empty, ([gt_boxes[0]], [gt_labels[0]]), 2)["ap"] == 0.0
    with pytest.raises(ValueError, match="ground-truth"):
        coco_ap(empty, ([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)]), 2)


def test_kendall_tau_against_hand_count():
    # [1..5] vs [3, 1, 2, 5, 4]: discordant pairs (1,2), (1,3), (4,5); concordant 7 -> (7 - 3) / 10.
    a, b = [1, 2, 3, 4, 5], [3, 1, 2, 5, 4]
    assert kendall_tau(a, b) == pytest.approx(0.4)
    assert _kendall_tau_b(np.array(a, float), np.array(b, float)) == pytest.approx(0.4)
    # With ties (tau-b): C = 4, D = 0, one pair tied only in a, one only in b -> 4 / sqrt(5 * 5).
    a, b = [1, 1, 2, 3], [1, 2, 2, 3]
    assert kendall_tau(a, b) == pytest.approx(0.8)
    assert _kendall_tau_b(np.array(a, float), np.array(b, float)) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1, 2, float("nan")], [1, 2, 3])


# --------------------------------------------------------------------- evaluator
@pytest.mark.parametrize("kind,reward", [("nasfcos", "neg_loss"), ("nasfpn", "ap")])
def test_evaluate_returns_both_rewards(proxy, kind, reward):
    space, ev = _evaluator(proxy, kind, reward=reward, early_stop=False)
    r = ev.evaluate(space.sample(np.random.default_rng(1)), seed=0)
    assert r.ok, r.error
    assert r.stage == 2 and math.isfinite(r.reward)
    for k in ("neg_loss", "ap", "ap50", "stage1_neg_loss", "stage1_ap", "stage1_ap50", "stage2_ap"):
        assert k in r.metrics and math.isfinite(r.metrics[k]), k
    assert r.reward == r.metrics[reward] and r.metrics["stage1_reward"] == r.metrics[f"stage1_{reward}"]
    assert r.metrics["neg_loss"] < 0 and 0.0 <= r.metrics["ap"] <= 1.0
    assert 0 < r.cost["decoder_params"] < r.cost["params"] and 0 < r.cost["decoder_madds"] < r.cost["madds"]
    assert ev.stage1_rewards == [r.metrics["stage1_reward"]]


def test_early_stopping_against_running_mean(proxy):
    space, ev = _evaluator(proxy, measure_cost=False)
    arch = space.sample(np.random.default_rng(2))
    ev.stage1_rewards = [1e9]  # nobody beats this mean: stage 2 is skipped
    r = ev.evaluate(arch, seed=0)
    assert r.ok and r.stage == 1 and "stage2_reward" not in r.metrics
    assert r.reward == r.metrics["stage1_reward"] and len(ev.stage1_rewards) == 2
    ev.stage1_rewards = [-1e9]  # everybody beats this one: stage 2 runs
    r = ev.evaluate(arch, seed=0)
    assert r.ok and r.stage == 2 and r.reward == r.metrics["stage2_reward"]


def test_failures_are_recorded_and_the_evaluator_keeps_working(proxy):
    space, fn = _space("nasfcos")

    def raising(arch):
        raise RuntimeError("no such detector")

    def nan_neck(arch):
        det = fn(arch)
        det.neck.register_forward_hook(lambda m, i, out: tuple(o * float("nan") for o in out))
        return det

    arch = space.sample(np.random.default_rng(3))
    _, ev = _evaluator(proxy, model_fn=raising, measure_cost=False)
    r = ev.evaluate(arch)
    assert r.status == "failed" and r.reward is None and "RuntimeError: no such detector" in r.error
    ev.model_fn = nan_neck
    r = ev.evaluate(arch)
    assert r.status == "failed" and r.error.startswith("diverged: loss is nan at stage 1") and r.stage == 1
    ev.model_fn = fn
    r = ev.evaluate(arch)
    assert r.ok and ev.stage1_rewards == [r.metrics["stage1_reward"]]


def test_restore_rebuilds_running_mean(proxy):
    _, ev = _evaluator(proxy)
    ev.restore([Result(reward=1.0, metrics={"stage1_reward": 1.0}), Result.failed("boom", stage1_reward=3.0),
                Result.failed("early"), None])
    assert ev.running_mean == pytest.approx(2.0)
    ev.restore([])
    assert ev.running_mean is None


def test_stage1_trains_on_a_fixed_batch(proxy):
    # batch_size >= 8 training images: every iteration sees the same batch.
    space, ev = _evaluator(proxy, stage1=StageCfg(iters=12, batch_size=8, lr=3e-3), stage2=None,
                           measure_cost=False)
    r = ev.evaluate(space.default_arch(), seed=0)
    assert r.ok and r.stage == 1
    assert r.metrics["stage1_loss_last"] < 0.8 * r.metrics["stage1_loss_first"]


def test_train_longer_leaves_running_mean_alone(proxy):
    space, ev = _evaluator(proxy, measure_cost=False)
    ev.stage1_rewards = [5.0]
    out = ev.train_longer(space.sample(np.random.default_rng(4)), iters=4, seed=1)
    assert {"ap", "ap50", "neg_loss"} <= set(out) and out["stage"] == 2.0
    assert all(math.isfinite(out[k]) for k in ("ap", "ap50", "neg_loss"))
    assert ev.stage1_rewards == [5.0]


def test_config_validation():
    with pytest.raises(ValueError, match="reward"):
        DetEvalCfg(reward="miou")
    with pytest.raises(TypeError, match="NASFCOSSpace"):
        detector_model_fn(object(), 2)
