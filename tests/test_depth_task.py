"""Depth task: losses and mmseg DepthMetric figures against hand-computed values, the reward, candidates
in the proxy trainer's contract, the mmseg depth heads (found decoder and baselines) in DepthEstimator,
and clear errors for bad options."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.backbones import build_backbone
from densenas.config import ConfigError
from densenas.decoders.auxcell import AuxCellSpace
from densenas.tasks.depth.candidate import DepthTargets, build_depth_candidate
from densenas.tasks.depth.losses import berhu_loss, depth_loss, depth_metrics, depth_reward, l1_loss, to_depth
from densenas.tasks.depth.task import DepthTask

GT = torch.tensor([[1.0, 2.0], [4.0, 0.0]])    # 0: invalid
PRED = torch.tensor([[1.0, 1.0], [5.0, 3.0]])


def test_metrics_match_hand_computed_values():
    m = depth_metrics([(GT, PRED)])
    # valid pixels: (gt, pred) = (1, 1), (2, 1), (4, 5); ratios max(gt/pred, pred/gt) = 1, 2, 1.25
    assert m["d1"] == pytest.approx(1 / 3) and m["d2"] == pytest.approx(2 / 3) and m["d3"] == pytest.approx(2 / 3)
    assert m["abs_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 3))
    dl = [0.0, -math.log(2), math.log(1.25)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in dl) / 3))
    assert m["log10"] == pytest.approx((math.log10(2) + math.log10(1.25)) / 3)
    assert m["silog"] == pytest.approx(math.sqrt(sum(x * x for x in dl) / 3 - 0.5 * (sum(dl) / 3) ** 2))
    assert set(m) == {"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}


def test_metrics_average_images_and_skip_out_of_range_pixels():
    perfect_gt = torch.tensor([[3.0, 12.0]])      # 12 m is beyond max_depth=10: not evaluated
    perfect_pred = torch.tensor([[3.0, 1.0]])
    m = depth_metrics([(GT, PRED), (perfect_gt, perfect_pred)], max_depth=10.0)
    assert m["d1"] == pytest.approx((1 / 3 + 1) / 2) and m["rmse"] == pytest.approx(math.sqrt(2 / 3) / 2)
    with pytest.raises(ValueError, match="no image has a valid depth pixel"):
        depth_metrics([(torch.zeros(2, 2), torch.ones(2, 2))])
    # a prediction that underflows to 0 is clamped: finite log metrics
    assert math.isfinite(depth_metrics([(GT, torch.zeros(2, 2))])["rmse_log"])


def test_reward_is_bounded_and_monotone():
    assert depth_reward({"d1": 1.0, "rmse": 0.0}) == 1.0
    assert depth_reward({"d1": 0.81, "rmse": 0.0}) == pytest.approx(0.9)
    assert depth_reward({"d1": 0.5, "rmse": 1.0}) == pytest.approx(0.5)
    assert depth_reward({"d1": 0.5, "rmse": 2.0}) < depth_reward({"d1": 0.5, "rmse": 1.0})
    assert depth_reward({"d1": float("nan"), "rmse": 1.0}) == 0.0


def test_losses_use_valid_pixels_only():
    pred, target = torch.tensor([[[[1.0, 3.0, 7.0]]]]), torch.tensor([[[[1.5, 1.0, 0.0]]]])
    # berHu: errors 0.5, 2 (the 0 label is invalid); c = 0.2 * 2 = 0.4: both above c -> (e^2 + c^2) / 2c
    assert float(berhu_loss(pred, target)) == pytest.approx(((0.25 + 0.16) / 0.8 + (4 + 0.16) / 0.8) / 2)
    assert float(l1_loss(pred, target)) == pytest.approx(1.25)
    d = [math.log(1.5) - math.log(1.0), math.log(1.0) - math.log(3.0)]
    silog = math.sqrt((d[0] ** 2 + d[1] ** 2) / 2 - 0.5 * ((d[0] + d[1]) / 2) ** 2)
    assert float(depth_loss(pred, target, "silog")) == pytest.approx(silog, rel=1e-5)
    with pytest.raises(ValueError, match="depth loss 'mse'"):
        depth_loss(pred, target, "mse")


def test_to_depth_is_a_bounded_sigmoid_resized_to_the_label():
    d = to_depth(torch.tensor([[[[-50.0, 0.0], [50.0, 0.0]]]]), 10.0, (4, 4))
    assert d.shape == (1, 1, 4, 4) and float(d.min()) >= 0 and float(d.max()) <= 10
    assert float(to_depth(torch.zeros(1, 1, 1, 1), 10.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("loss", ["silog", "berhu", "l1"])
def test_candidate_contract(loss):
    encoder, shapes = build_backbone(dict(type="mobilenet_v2", pretrained=False))
    space = AuxCellSpace(num_classes=1, width=8, num_cells=2, blocks_per_cell=1)
    torch.manual_seed(0)
    cand = build_depth_candidate(space, space.sample(np.random.default_rng(0)), shapes, max_depth=10.0, loss=loss)
    with torch.no_grad():
        feats = encoder.eval()(torch.randn(2, 3, 64, 64))
    depth = torch.rand(2, 1, 64, 64) * 9 + 0.5
    depth[:, :, :4] = 0  # invalid rows
    losses = cand.train().loss(feats, {"depth": depth})
    assert list(losses) == ["loss_depth", "loss_aux0"] and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        pred = cand.eval().predict(feats, {"depth": depth})
        assert pred.shape == (2, 64, 64) and float(pred.min()) >= 1e-3 and float(pred.max()) <= 10
        assert cand(*feats).shape[1] == 1  # the deployed output: a one-channel depth map
    targets = DepthTargets(depth, depth)
    metrics = targets.metrics([pred[:1], pred[1:]], "val")
    assert 0 <= metrics["d1"] <= 1 and math.isfinite(DepthTask().reward(metrics))
    assert torch.equal(targets.batch("train", torch.tensor([1]), "cpu")["depth"], depth[1:])
    with pytest.raises(ValueError, match="cover 1 images"):
        targets.metrics([pred[:1]], "val")


def test_task_options_and_data_keys_are_checked(tmp_path):
    with pytest.raises(ValueError, match="task.loss is 'mse'"):
        DepthTask(loss="mse")
    with pytest.raises(ValueError, match="min_depth < task.max_depth"):
        DepthTask(max_depth=0.0)
    task = DepthTask()
    assert task.space_defaults() == {"num_classes": 1}
    with pytest.raises(ConfigError, match="data.layout"):
        task.build_data(dict(layout="kitti", root=str(tmp_path)), log=lambda m: None)
    with pytest.raises(ConfigError, match="num_trian"):
        task.build_data(dict(root=str(tmp_path), proxy=dict(num_trian=2)), log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="split folder missing"):
        task.build_data(dict(layout="nyu", root=str(tmp_path)), log=lambda m: None)
    task.build_data(dict(root=str(tmp_path / "p"), image_size=(32, 48),
                         proxy=dict(num_train=3, num_test=2, height=48, width=64)), log=lambda m: None)
    assert task.images("train").shape == (3, 3, 32, 48) and task.images("val").shape == (2, 3, 32, 48)


# --------------------------------------------------------------------------- mmseg depth heads
def _model_cfg(tmp_path: Path, **kw):
    from mmengine.config import Config

    from densenas.tasks.depth.export import export_depth_config

    root = tmp_path / "data"
    (root / "densenas_proxy_depth.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "densenas_proxy_depth.json").write_text("{}")  # the exporter builds no proxy set here
    cfg = Config.fromfile(str(export_depth_config(tmp_path / "c.py", data_root=str(root), width=16, **kw)))
    cfg.model.backbone.backbone.pretrained = False
    return cfg


def _samples(n: int, h: int, w: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    out = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        gt = torch.rand(1, h, w) * 8 + 1
        gt[:, 0] = 0
        s.gt_depth_map = PixelData(data=gt)
        out.append(s)
    return out


@pytest.mark.parametrize("what,loss", [("found", "silog"), ("fcn", "berhu"), ("deeplabv3plus", "l1")])
def test_mmseg_depth_heads_train_and_predict(tmp_path, what, loss):
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS

    from densenas.arch import Arch

    arch = AuxCellSpace(num_classes=1).default_arch() if what == "found" else None
    cfg = _model_cfg(tmp_path, arch=arch, baseline=None if arch else what, loss=loss)
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope("mmseg")
    assert cfg.model.type == "DepthEstimator" and cfg.model.decode_head.num_classes == 1
    model = MODELS.build(cfg.model)
    x = torch.randn(2, 3, 64, 96)
    losses = model.train().loss(x, _samples(2, 64, 96))
    name = {"silog": "loss_silog", "berhu": "loss_berhu", "l1": "loss_l1"}[loss]
    assert f"decode.{name}" in losses and all(torch.isfinite(v) for v in losses.values())
    assert ("decode.loss_aux0" in losses) == (what == "found")
    sum(losses.values()).backward()
    with torch.no_grad():
        out = model.eval().predict(x, _samples(2, 64, 96))
        tensor = model(x, mode="tensor")
    d = out[0].pred_depth_map.data
    assert d.shape == (1, 64, 96) and float(d.min()) >= 1e-3 and float(d.max()) <= 10.0
    assert tensor.shape[:2] == (2, 1)
    if what == "found":
        assert Arch.from_dict(cfg.model.decode_head.arch).as_dict() == arch.as_dict()


def test_export_takes_width_and_backbone_not_data_from_a_segmentation_search(tmp_path):
    from densenas.tasks.depth.export import search_defaults

    seg = dict(task=dict(type="segmentation"), space=dict(type="auxcell", width=24),
               backbone=dict(type="mobilenet_v2", pretrained=True),
               data=dict(layout="proxy", root="/nonexistent/voc", proxy=dict(num_train=3)))
    arch = AuxCellSpace(num_classes=5).default_arch()
    d = search_defaults(seg, arch, DepthTask())
    assert d["width"] == 24 and d["backbone"]["type"] == "mobilenet_v2" and "proxy" not in d
    assert d["loss"] == "silog" and d["max_depth"] == 10.0
    depth = dict(seg, task=dict(type="depth", loss="berhu", max_depth=8.0))
    d = search_defaults(depth, arch, DepthTask())
    assert d["loss"] == "berhu" and d["max_depth"] == 8.0 and d["proxy"] == {"num_train": 3}
    with pytest.raises(ValueError, match="baseline 'aspp'"):
        _model_cfg(tmp_path, baseline="aspp")
    with pytest.raises(ValueError, match="dataset 'kitti'"):
        _model_cfg(tmp_path, baseline="fcn", dataset="kitti")
