"""Keypoints at their real resolution: the sub-pixel codecs (DARK, Zhang et al., CVPR 2020; UDP, Huang et al.,
CVPR 2020) and the flip test, the same in the search and in the exported mmpose model; the quantisation
ceiling of each codec; the SimpleBaseline head (Xiao et al., ECCV 2018) as a point of the aux-cell space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.config import ConfigError
from densenas.datasets.kpt_proxy import SIGMAS
from densenas.decoders import auxcell
from densenas.decoders.auxcell import AuxCellSpace
from densenas.tasks.keypoints.data import CODECS

K = len(SIGMAS)
MNV2 = dict(type="mobilenet_v2", pretrained=False)


def _proxy(root: Path, codec: str, **kw) -> dict:
    return dict(layout="proxy", root=str(root), input_size=(64, 48), codec=codec,
                proxy=dict(num_train=4, num_val=3, size=96, seed=1), **kw)


# ------------------------------------------------------------------------------- the same in both
@pytest.mark.parametrize("codec, flip", [("msra", True), ("dark", True), ("udp", True), ("dark", False)])
def test_search_predicts_what_the_exported_mmpose_model_predicts(codec, flip, tmp_path):
    """One decoder's weights in the search's candidate and in the exported ``TopdownPoseEstimator`` give the
    same image-coordinate keypoints: codec, crops (UDP's for ``udp``), flip test and its shift agree."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    from mmengine.utils import import_modules_from_strings
    from mmpose.registry import MODELS
    from mmpose.structures import PoseDataSample

    from densenas.backbones import build_backbone
    from densenas.tasks.keypoints.task import KeypointTask

    task = KeypointTask(flip_test=flip)
    data_cfg = _proxy(tmp_path / "proxy", codec)
    task.build_data(data_cfg, log=lambda m: None)
    space = AuxCellSpace(K, width=8, num_cells=2, blocks_per_cell=1)
    torch.manual_seed(0)
    encoder, shapes = build_backbone(MNV2)
    cand = task.build_candidate(space, space.sample(np.random.default_rng(3)), shapes).eval()
    # non-trivial BN statistics, so the heatmaps are not a constant
    for m in cand.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    n = len(task.data.val)
    images = task.images("val")
    assert len(images) == (2 * n if flip else n)
    with torch.no_grad():
        preds = [cand.predict(encoder.eval()(images), task.batch("val", torch.arange(len(images)), "cpu"))]
    if flip:
        ours, _ = task.targets.decode_flip_test(preds, "val")
    else:
        ours = preds[0][0]

    out = tmp_path / "model.py"
    search_cfg = dict(task=dict(type="keypoints", flip_test=flip), data=data_cfg, space=dict(width=8),
                      backbone=MNV2)
    task.export(out, arch=cand.decoder.arch, search_cfg=search_cfg)
    cfg = Config.fromfile(str(out))
    head = cfg.model.head
    want = dict(msra=("MSRAHeatmap", None), dark=("MSRAHeatmap", True), udp=("UDPHeatmap", None))[codec]
    assert head.decoder.type == want[0] and head.decoder.get("unbiased") == want[1]
    assert cfg.model.test_cfg == dict(flip_test=flip, flip_mode="heatmap", shift_heatmap=codec != "udp")
    affines = [s for p in (cfg.train_dataloader.dataset.pipeline, cfg.val_dataloader.dataset.pipeline)
               for s in p if s.type == "TopdownAffine"]
    assert len(affines) == 2 and all(s.get("use_udp", False) == (codec == "udp") for s in affines)
    assert [s for s in cfg.train_dataloader.dataset.pipeline if s.type == "GenerateTarget"][0].encoder == head.decoder
    import_modules_from_strings(**cfg.custom_imports)
    cfg.model.backbone.backbone.pretrained = False
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # mmpose's, restored after
        model = MODELS.build(cfg.model).eval()
    model.backbone.encoder.load_state_dict(encoder.state_dict())
    model.head.decoder_net.load_state_dict(cand.decoder.state_dict())
    val = task.data.val
    samples = []
    for i in range(n):
        sample = PoseDataSample(metainfo=dict(input_size=task.data.input_size, input_center=val.centers[i:i + 1],
                                              input_scale=val.scales[i:i + 1], flip_indices=task.data.flip_indices))
        sample.gt_instances = InstanceData(bboxes=np.zeros((1, 4)), bbox_scores=np.ones(1))
        samples.append(sample)
    with torch.no_grad(), DefaultScope.overwrite_default_scope(cfg.default_scope):
        results = model.predict(val.images, samples)
    theirs = np.stack([r.pred_instances.keypoints[0] for r in results])
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_flip_test_scores_the_mean_of_crop_and_mirror(tmp_path):
    """The search's flip test: the mirrored crops' heatmaps, flipped back by mmpose's ``flip_heatmaps``, are
    averaged with the crops' before decoding; a person without both halves is refused, naming it."""
    from mmpose.models.utils.tta import flip_heatmaps

    from densenas.tasks.keypoints.candidate import FlipHeatmaps
    from densenas.tasks.keypoints.metrics import decode_heatmaps, to_image
    from densenas.tasks.keypoints.task import KeypointTask

    task = KeypointTask(flip_test=True)
    task.build_data(_proxy(tmp_path, "dark"), log=lambda m: None)
    val, n = task.data.val, len(task.data.val)
    crop, mirror = val.heatmaps, torch.rand_like(val.heatmaps)
    back = flip_heatmaps(mirror, flip_indices=task.data.flip_indices, flip_mode="heatmap", shift_heatmap=True)
    # in two batches that split the pairs
    preds = [FlipHeatmaps(np.arange(n), crop.numpy()), FlipHeatmaps(np.arange(n), back.numpy())]
    kps, _ = task.targets.decode_flip_test(preds, "val")
    want, _ = decode_heatmaps((crop + back) * 0.5, task.codec)
    np.testing.assert_allclose(kps, to_image(want, val.centers.astype(float), val.scales.astype(float),
                                             task.data.input_size), atol=1e-6)
    assert task.batch("val", torch.tensor([0, n]), "cpu")["flipped"].tolist() == [False, True]
    with pytest.raises(ValueError, match="person 0 has 1"):
        task.targets.decode_flip_test([FlipHeatmaps(np.arange(1, n), crop[1:].numpy()), preds[1]], "val")


@pytest.mark.parametrize("udp", [True, False])
def test_search_crops_are_mmpose_topdown_affine(udp, tmp_path):
    """The search's crops and crop keypoints are mmpose's ``TopdownAffine(use_udp=...)`` of the same box."""
    from mmpose.datasets.transforms import TopdownAffine
    from PIL import Image

    from densenas.datasets.cocokpt import coco_paths, crop_persons, read_coco_keypoints
    from densenas.datasets.kpt_proxy import build_proxy_kpt
    from densenas.tasks.keypoints.data import crop_persons_udp

    build_proxy_kpt(tmp_path, num_train=1, num_val=2, size=96, seed=1)
    persons, _ = read_coco_keypoints(*coco_paths(tmp_path, "val"))
    crops, centers, scales, kps = (crop_persons_udp if udp else crop_persons)(persons, (48, 64))
    for i, p in enumerate(persons):
        out = TopdownAffine(input_size=(48, 64), use_udp=udp).transform(dict(
            img=np.asarray(Image.open(p.img_path).convert("RGB")), bbox_center=p.center[None].astype(np.float32),
            bbox_scale=p.scale[None].astype(np.float32), keypoints=p.keypoints[None].astype(np.float32)))
        np.testing.assert_array_equal(crops[i], out["img"])
        np.testing.assert_allclose(kps[i], out["transformed_keypoints"][0], atol=1e-4)
        np.testing.assert_allclose(scales[i], out["input_scale"], rtol=1e-6)


def test_codec_and_flip_options_are_checked(tmp_path):
    from densenas.tasks.keypoints.data import build_data, codec_cfg
    from densenas.tasks.keypoints.task import KeypointTask

    with pytest.raises(ConfigError, match=r"data.codec='dsnt'"):
        build_data(_proxy(tmp_path, "dsnt"), log=lambda m: None)
    with pytest.raises(TypeError, match="task.flip_test"):
        KeypointTask(flip_test="yes")
    with pytest.raises(ValueError, match=r"codec='argmax'"):
        KeypointTask().export(tmp_path / "x.py", baseline="heatmap", codec="argmax", data_root=str(tmp_path / "p"))
    # DARK's modulation kernel follows sigma as mmpose's configs: 11 at sigma 2, 17 at sigma 3
    assert codec_cfg((48, 64), 2.0, "dark")["blur_kernel_size"] == 11
    assert codec_cfg((192, 256), 3.0, "dark")["blur_kernel_size"] == 17


# ------------------------------------------------------------------------------- quantisation ceiling
def test_sub_pixel_codecs_lift_the_quantisation_ceiling(tmp_path):
    """The val split's own targets decoded back (the search's data: 40 persons, 128x96 crops, 32x24
    heatmaps): the arg-max cell caps PCKh@0.1 at 0.370 (MSRA's quarter step is zero on its symmetric
    target); DARK and UDP recover every keypoint within 0.1 head sizes. The flip test costs DARK (and MSRA)
    the residual quarter-cell misalignment of the shifted heatmap, UDP nothing."""
    from densenas.tasks.keypoints.ceiling import SEARCH_DATA, ceilings, format_rows

    rows = {(r["decoding"], r["flip"]): r for r in ceilings(dict(SEARCH_DATA, root=str(tmp_path)))}
    print("\n" + format_rows(list(rows.values())))
    assert {r["persons"] for r in rows.values()} == {40}
    old = rows["argmax", False]
    assert old["pckh01"] == pytest.approx(0.370, abs=1e-3) and old["pckh05"] == 1.0
    assert rows["msra", False]["pckh01"] == pytest.approx(old["pckh01"])
    for codec in ("dark", "udp"):
        assert rows[codec, False]["pckh01"] == 1.0 and rows[codec, False]["err"] < 0.01 < old["err"]
        assert rows[codec, True]["pckh01"] == 1.0
    assert rows["udp", True]["err"] == pytest.approx(rows["udp", False]["err"], abs=1e-4)  # UDP flips exactly
    assert rows["dark", True]["err"] > 5 * rows["dark", False]["err"]


# ------------------------------------------------------------------------------- SimpleBaseline in the space
@pytest.fixture(scope="module")
def mnv2_shapes():
    from densenas.backbones import backbone_shapes

    return backbone_shapes(MNV2)


@pytest.mark.parametrize("width", [48, 256])  # the search's width; mmpose's SimpleBaseline width
def test_heatmap_baseline_is_mmpose_heatmap_head(width, mnv2_shapes):
    from mmengine.registry import DefaultScope
    from mmpose.registry import MODELS

    space = AuxCellSpace(K, width=width, **auxcell.EXTENDED, task="keypoints")
    arch = space.baseline_archs()["heatmap"]
    decoder = space.build(arch, mnv2_shapes)
    with DefaultScope.overwrite_default_scope("mmpose"):
        head = MODELS.build(dict(type="HeatmapHead", in_channels=320, out_channels=K,
                                 deconv_out_channels=(width,) * 3, deconv_kernel_sizes=(4, 4, 4)))
    feats = [torch.randn(2, s.channels, 128 // s.stride, 96 // s.stride) for s in mnv2_shapes.values()]
    with torch.no_grad():
        assert decoder.eval()(feats).shape == head.eval()(feats).shape == (2, K, 32, 24)
    assert decoder.output_stride == space.output_stride(arch, mnv2_shapes) == 4
    deployed = sum(p.numel() for p in decoder.parameters()) - sum(p.numel() for p in decoder.aux_heads.parameters())
    theirs = sum(p.numel() for p in head.parameters())
    assert 0.9 <= deployed / theirs <= 1.1, (deployed, theirs)
    # the same layers: the deconvolution stack is the head's, the fuse conv1x1 (width^2 + 2 width) the extra
    assert sum(p.numel() for p in decoder.proj["3"].parameters()) == sum(p.numel() for p in
                                                                         head.deconv_layers.parameters())
    assert deployed - theirs == width * width + 2 * width
    assert "enc3 (s32): deconv" in space.describe(arch, mnv2_shapes)


def test_deconv_projection_is_offered_on_the_deepest_level_only_and_paper_variant_unchanged(mnv2_shapes):
    from densenas.arch import InvalidArch

    ext = AuxCellSpace(K, **auxcell.EXTENDED, task="keypoints")
    options = {d.name: d.options for d in ext.decisions() if d.name.endswith(".proj")}
    assert "deconv" in options["enc3.proj"] and not any("deconv" in options[f"enc{i}.proj"] for i in range(3))
    arch = ext.baseline_archs()["heatmap"].replace(**{"cell0.in0": 0, "enc0.proj": "deconv"})
    with pytest.raises(InvalidArch, match=r"enc0.proj='deconv': .* deepest level only \(enc3.proj\)"):
        ext.check(arch)
    # the heatmap baseline is the keypoint task's: other tasks' extended spaces keep their two baselines
    assert set(AuxCellSpace(K, **auxcell.EXTENDED).baseline_archs()) == {"aspp", "deeplabv3plus"}
    assert set(ext.baseline_archs()) == {"aspp", "deeplabv3plus", "heatmap"}
    assert AuxCellSpace(K, task="keypoints").baseline_archs() == {}  # the paper's variant has no deconv
    assert [d.name for d in AuxCellSpace(K, task="keypoints").decisions()] == \
        [d.name for d in AuxCellSpace(K).decisions()]


def test_keypoint_search_seeds_the_heatmap_baseline():
    """The extended keypoint search config proposes mmpose's HeatmapHead (as the space expresses it) first."""
    from densenas.build import build_search
    from densenas.config import load_config

    search = build_search(load_config("configs/search/keypoints_ext_proxy.py"), build_evaluator=False,
                          log=lambda m: None)
    assert search.space.task == "keypoints" and "heatmap" in search.space.baseline_archs()
    archs = search.seed_baselines(log=lambda m: None)
    assert search.space.baseline_archs()["heatmap"].key in [a.key for a in archs]
