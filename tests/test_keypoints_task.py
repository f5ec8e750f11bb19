"""The keypoint task: metrics against hand-computed values and mmpose's own CocoMetric, the candidate's
loss / predict contract, the mmpose head and the exported configs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.datasets.kpt_proxy import SIGMAS
from densenas.tasks.keypoints.metrics import coco_keypoint_ap, keypoint_reward, pckh, to_image

ROOT = Path(__file__).resolve().parents[1]
K = len(SIGMAS)


def _gt(n: int = 3, seed: int = 0) -> tuple[np.ndarray, list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(20, 80, (n, K, 2))
    anns = [dict(id=i + 1, image_id=i // 2 + 1, category_id=1, iscrowd=0, area=2500.0, bbox=[15, 15, 70, 70],
                 keypoints=[float(v) for p in gt[i] for v in (*p, 2)], num_keypoints=K) for i in range(n)]
    images = [dict(id=i, width=100, height=100) for i in range(1, n // 2 + 2)]
    return gt, anns, images


def test_pckh_matches_a_hand_count():
    gt = np.zeros((2, 4, 2))
    pred = gt.copy()
    pred[0, :, 0] = [4.0, 6.0, 0.4, 1.2]  # head size 10: thr 0.5 -> 5 px, 0.1 -> 1 px
    pred[1, :, 1] = [1.0, 2.0, 9.0, 0.5]  # head size 2: thr 0.5 -> 1 px
    vis = np.array([[2, 2, 2, 1], [2, 0, 2, 2]])
    heads = np.array([10.0, 2.0])
    # per keypoint (labelled ones): k0 {4/10, 1/2} -> 1/2 correct at 0.5 (0.5 < .5 false); k1 {6/10}: 0;
    # k2 {.04, 4.5}: 1/2; k3 {.12, .25}: 2/2 -> mean (0.5 + 0 + 0.5 + 1) / 4
    assert pckh(pred, gt, vis, heads, 0.5) == pytest.approx((0.5 + 0 + 0.5 + 1) / 4)
    # at 0.1: k0 {0.4, 0.5}: 0; k1 {0.6}: 0; k2 {0.04, 4.5}: 1/2; k3 {0.12, 0.25}: 0
    assert pckh(pred, gt, vis, heads, 0.1) == pytest.approx(0.5 / 4)
    assert keypoint_reward({"pckh05": 0.5, "pckh01": 0.125}) == pytest.approx(0.3125)


def test_coco_ap_is_one_for_perfect_keypoints_and_agrees_with_mmpose_cocometric(tmp_path):
    gt, anns, images = _gt(4)
    scores = np.ones((4, K))
    perfect = coco_keypoint_ap(gt, scores, anns, images, np.asarray(SIGMAS))
    assert perfect["ap"] == pytest.approx(1.0) and perfect["ar"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = gt + rng.normal(0, 3, gt.shape)
    ours = coco_keypoint_ap(noisy, scores * 0.9, anns, images, np.asarray(SIGMAS))
    assert 0 < ours["ap"] < 1

    from mmpose.evaluation.metrics import CocoMetric

    metric = CocoMetric(ann_file=None, outfile_prefix=str(tmp_path / "r"))
    metric.dataset_meta = dict(dataset_name="kpt_test_unique", num_keypoints=K, sigmas=np.asarray(SIGMAS),
                               CLASSES=[dict(id=1, name="person")])
    samples = [dict(id=a["id"], img_id=a["image_id"], ori_shape=(100, 100), raw_ann_info=a, category_id=1,
                    pred_instances=dict(keypoints=noisy[i:i + 1], keypoint_scores=np.full((1, K), 0.9)),
                    gt_instances=dict(bbox_scores=np.ones(1))) for i, a in enumerate(anns)]
    metric.process([], samples)
    theirs = metric.compute_metrics(metric.results)
    assert ours["ap"] == pytest.approx(theirs["AP"]) and ours["ar"] == pytest.approx(theirs["AR"])


def test_to_image_inverts_the_crop():
    centers, scales = np.array([[50.0, 60.0]]), np.array([[30.0, 40.0]])
    kp = np.array([[[0.0, 0.0], [24.0, 32.0], [12.0, 16.0]]])
    np.testing.assert_allclose(to_image(kp, centers, scales, (24, 32))[0], [[35, 40], [65, 80], [50, 60]])


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from densenas.task import task_class

    t = task_class("keypoints")()
    root = tmp_path_factory.mktemp("kpt")
    t.build_data(dict(layout="proxy", root=str(root), input_size=(64, 48),
                      proxy=dict(num_train=4, num_val=3, size=96, seed=1)), log=lambda m: None)
    return t


def test_candidate_contract_and_perfect_heatmaps_give_perfect_metrics(task):
    from densenas.backbones import build_backbone
    from densenas.build import make_space, space_class

    space = make_space(space_class("auxcell"), dict(width=8, num_cells=2, blocks_per_cell=1), task, "test")
    assert space.num_classes == K
    enc, shapes = build_backbone(dict(type="mobilenet_v2", pretrained=False))
    torch.manual_seed(0)
    cand = task.build_candidate(space, space.sample(np.random.default_rng(0)), shapes)
    idx = torch.arange(3)
    feats = enc.eval()(task.images("train")[idx])
    losses = cand.train().loss(feats, task.batch("train", idx, "cpu"))
    assert "loss_kpt" in losses and any(k.startswith("loss_aux") for k in losses)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    with torch.no_grad():
        out = cand.eval()(*feats)
    assert out.shape == (3, K, 16, 12)
    # the targets themselves decoded: every labelled keypoint within a pixel of the truth -> PCKh@0.5 = 1
    val = task.data.val
    batch = task.batch("val", torch.arange(len(val)), "cpu")
    from densenas.tasks.keypoints.metrics import decode_heatmaps

    kps, scores = decode_heatmaps(val.heatmaps, task.codec)
    pred = to_image(kps, batch["centers"], batch["scales"], task.data.input_size)
    m = task.metrics([(pred, scores)], "val")
    # (COCO AP stays below 1: at 16x12 heatmaps one heatmap pixel is ~2 image pixels, large for OKS)
    assert m["pckh05"] == pytest.approx(1.0) and m["ap"] > 0.5
    assert task.reward(m) == pytest.approx((m["pckh05"] + m["pckh01"]) / 2)


@pytest.mark.parametrize("name", ["keypoints_found_proxy.py", "keypoints_heatmap_proxy.py"])
def test_shipped_config_builds_the_mmpose_model(name):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(str(ROOT / "configs" / "finetune" / name))
    import_modules_from_strings(**cfg.custom_imports)
    cfg.model.backbone.backbone.pretrained = False
    from mmpose.registry import MODELS

    assert cfg.densenas_task == "keypoints" and not Path(cfg.val_evaluator[0].ann_file).is_absolute()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # not left behind for later tests
        model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        heat = model(torch.rand(2, 3, 128, 96), None, mode="tensor")
    assert heat.shape == (2, cfg.model.head.out_channels, 32, 24) and torch.isfinite(heat).all()
    from densenas.tasks.keypoints.task import KeypointTask

    counted, params, channels, _ = KeypointTask().test_cost_model(model, cfg)
    assert channels == 3 and 0 < params <= sum(p.numel() for p in model.parameters())
    assert KeypointTask().test_size(cfg, None) == (128, 96)


def test_export_refuses_bad_requests(tmp_path):
    from densenas.arch import Arch
    from densenas.tasks.keypoints.task import KeypointTask

    with pytest.raises(ValueError, match="baseline 'aspp'"):
        KeypointTask().export(tmp_path / "x.py", baseline="aspp", data_root=str(tmp_path / "p"))
    with pytest.raises(ValueError, match="multiples of 32"):
        KeypointTask().export(tmp_path / "x.py", baseline="heatmap", crop=100, data_root=str(tmp_path / "p"))
    with pytest.raises(ValueError, match="num_templates"):  # a template arch that is no template network
        KeypointTask().export(tmp_path / "x.py", arch=Arch("template", (("a", 1),)), data_root=str(tmp_path / "p"))
    with pytest.raises(ValueError, match=r"arch space 'nasfpn' outputs 'detector': the keypoints task exports"):
        KeypointTask().export(tmp_path / "x.py", arch=Arch("nasfpn", (("a", 1),)), data_root=str(tmp_path / "p"))


def test_a_template_arch_exports_as_a_heatmap_head_without_its_search_config(tmp_path):
    """The template space writes its own heatmap head (``mm_fragment(arch, "heatmap_head")``): with no search
    config next to the arch, its settings are read off the arch, with the default widths and the first two
    MobileNetV2 levels it needs; the head builds and has the template network's parameters."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    from densenas.backbones import backbone_shapes
    from densenas.decoders.template import WIDTHS, TemplateSpace
    from densenas.tasks.keypoints.task import KeypointTask

    space = TemplateSpace(num_classes=K, context_ops=("none", "aspp"))  # the extended variant: head.context
    arch = space.sample(np.random.default_rng(3))
    out = KeypointTask().export(tmp_path / "t.py", arch=arch, data_root=str(tmp_path / "p"))
    cfg = Config.fromfile(str(out))
    head = cfg.model.head
    assert head.type == "AuxCellHeatmapHead" and head.space["type"] == "template"
    assert tuple(head.space["widths"]) == WIDTHS and "head.context" in dict(arch.choices)
    assert head.space["context_ops"] and head.in_channels == [24, 32] and head.in_strides == [4, 8]
    assert tuple(cfg.model.backbone.backbone.out_indices) == (3, 6)
    import_modules_from_strings(**cfg.custom_imports)
    cfg.model.backbone.backbone.pretrained = False
    from mmpose.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmpose"):
        model = MODELS.build(cfg.model).eval()
    shapes = backbone_shapes(dict(type="mobilenet_v2", out_indices=(3, 6)))
    built = TemplateSpace(num_classes=K, context_ops=tuple(head.space["context_ops"])).build(arch, shapes)
    assert sum(p.numel() for p in model.head.decoder_net.parameters()) == sum(p.numel() for p in built.parameters())
    with torch.no_grad():
        heat = model(torch.rand(1, 3, 128, 96), None, mode="tensor")
    assert heat.shape == (1, K, 32, 24)
