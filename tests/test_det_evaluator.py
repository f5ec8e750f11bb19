"""The proxy trainer (Nekrasov et al., CVPR 2019) scoring NAS-FCOS (Wang et al., CVPR 2020) and NAS-FPN
(Ghiasi et al., CVPR 2019) candidates through the real :class:`DetectionTask`, built as
:func:`densenas.build.build_search` builds it: task, proxy COCO data, backbone plugin, space, trainer. A tiny
proxy set, a random (not pretrained) encoder, a few iterations, CPU only. The metrics alone:
``test_det_metrics.py``."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

from densenas.backbones import build_backbone  # noqa: E402
from densenas.build import make_space  # noqa: E402
from densenas.config import ConfigError  # noqa: E402
from densenas.decoders.nasfcos import NASFCOSSpace  # noqa: E402
from densenas.decoders.nasfpn import NASFPNSpace  # noqa: E402
from densenas.evaluation import ProxyCfg, ProxyTrainer, StageCfg  # noqa: E402
from densenas.tasks.detection.candidate import detector_model_fn  # noqa: E402
from densenas.tasks.detection.task import DetectionTask  # noqa: E402

torch.set_num_threads(1)
SIZE, W = 64, 16
SPACES = {"nasfcos": (NASFCOSSpace, dict(part="fpn", width=W), dict(detector="fcos")),
          "nasfpn": (NASFPNSpace, dict(out_channels=W), dict(detector="retinanet", stacked_convs=1))}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """The ``data`` section of a tiny proxy COCO search, and the encoder with its shapes."""
    root = tmp_path_factory.mktemp("proxy_coco")
    data = dict(layout="proxy_coco", root=str(root), image_size=SIZE,
                proxy=dict(num_train=8, num_val=4, size=SIZE, num_classes=2, seed=0))
    torch.manual_seed(0)
    encoder, shapes = build_backbone({"type": "mobilenet_v2", "out_indices": (6, 13, 17), "pretrained": False})
    return data, encoder.eval(), shapes


def _task(data, kind="nasfcos", reward="neg_loss") -> DetectionTask:
    task = DetectionTask(reward=reward, **SPACES[kind][2])
    task.build_data(data, log=lambda s: None)  # the proxy set is built once; later calls reuse it
    return task


def _cfg(**kw) -> ProxyCfg:
    base = dict(stage1=StageCfg(iters=3, batch_size=4, lr=2e-3), stage2=StageCfg(iters=1, batch_size=2, lr=5e-4),
                eval_batch_size=4, grad_clip=35.0)
    return ProxyCfg(**{**base, **kw})


def _trainer(proxy, kind="nasfcos", reward="neg_loss", **kw):
    data, encoder, shapes = proxy
    task = _task(data, kind, reward)
    scls, opts, _ = SPACES[kind]
    space = make_space(scls, dict(opts), task, "test")
    return space, ProxyTrainer(task, space, encoder, shapes, _cfg(**kw), log=lambda s: None)


# --------------------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("kind,reward", [("nasfcos", "neg_loss"), ("nasfpn", "ap")])
def test_evaluate_returns_both_rewards(proxy, kind, reward):
    space, tr = _trainer(proxy, kind, reward, early_stop=False)
    r = tr.evaluate(space.sample(np.random.default_rng(1)), seed=0)
    assert r.ok, r.error
    assert r.stage == 2 and math.isfinite(r.reward)
    for k in ("neg_loss", "ap", "ap50", "stage1_neg_loss", "stage1_ap", "stage1_ap50", "stage2_ap"):
        assert k in r.metrics and math.isfinite(r.metrics[k]), k
    assert r.reward == r.metrics[reward] and r.metrics["stage1_reward"] == r.metrics[f"stage1_{reward}"]
    assert r.metrics["neg_loss"] < 0 and 0.0 <= r.metrics["ap"] <= 1.0
    assert 0 < r.cost["decoder_params"] < r.cost["params"] and 0 < r.cost["decoder_madds"] < r.cost["madds"]
    assert tr.stage1_rewards == [r.metrics["stage1_reward"]]


def test_failures_are_recorded_and_the_trainer_keeps_working(proxy):
    space, tr = _trainer(proxy, measure_cost=False)
    task = tr.task
    build = task.build_candidate

    def raising(space, arch, shapes):
        raise RuntimeError("no such detector")

    def nan_neck(space, arch, shapes):
        cand = build(space, arch, shapes)
        cand.neck.register_forward_hook(lambda m, i, out: tuple(o * float("nan") for o in out))
        return cand

    arch = space.sample(np.random.default_rng(3))
    task.build_candidate = raising
    r = tr.evaluate(arch)
    assert r.status == "failed" and r.reward is None and "RuntimeError: no such detector" in r.error
    assert r.stage == 0
    task.build_candidate = nan_neck
    r = tr.evaluate(arch)
    assert r.status == "failed" and r.error.startswith("diverged: loss is nan at stage 1") and r.stage == 1
    assert tr.stage1_rewards == []
    del task.build_candidate  # the class's method again
    r = tr.evaluate(arch)
    assert r.ok and tr.stage1_rewards == [r.metrics["stage1_reward"]]


def test_stage1_trains_on_a_fixed_batch(proxy):
    # batch_size >= 8 training images: every iteration sees the same images (in another order).
    space, tr = _trainer(proxy, stage1=StageCfg(iters=12, batch_size=8, lr=3e-3), stage2=None,
                         measure_cost=False)
    r = tr.evaluate(space.default_arch(), seed=0)
    assert r.ok and r.stage == 1
    assert r.metrics["stage1_loss_last"] < 0.8 * r.metrics["stage1_loss_first"]


def test_train_longer_leaves_running_mean_alone(proxy):
    space, tr = _trainer(proxy, measure_cost=False)
    tr.stage1_rewards = [5.0]
    out = tr.train_longer(space.sample(np.random.default_rng(4)), iters=4, seed=1)
    assert {"ap", "ap50", "neg_loss", "reward"} <= set(out) and out["stage"] == 2.0
    assert all(math.isfinite(out[k]) for k in ("ap", "ap50", "neg_loss"))
    assert out["reward"] == out["neg_loss"]
    assert tr.stage1_rewards == [5.0]


def test_config_validation(proxy):
    with pytest.raises(ValueError, match="task.reward='miou'"):
        DetectionTask(reward="miou")
    with pytest.raises(ValueError, match="task.detector='yolo'"):
        DetectionTask(detector="yolo")
    with pytest.raises(RuntimeError, match="build_data"):
        DetectionTask().images("train")
    with pytest.raises(ConfigError, match="data.image_szie"):
        DetectionTask().build_data({**proxy[0], "image_szie": 32}, log=lambda s: None)
    with pytest.raises(TypeError, match=r"\(object\) carries no mmdet adapter.*mm_detector"):
        detector_model_fn(object(), 2, in_channels=[32, 96, 320])
