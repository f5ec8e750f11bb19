"""Tests of the operation library, the MobileNetV2 encoder, the auxiliary-cell decoder space (Nekrasov et
al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells",
CVPR 2019) and its mmseg adapters. Tiny inputs, CPU only."""
from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.backbones import (MobileNetV2Encoder, find_mobilenet_v2_weights, load_mobilenet_v2_state_dict,
                                named_shapes)
from densenas.decoders.auxcell import AuxCellDecoder, AuxCellSpace
from densenas.ops import OPS, PRIMITIVES, build_op
from densenas.space import ShapeSpec

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def encoder() -> MobileNetV2Encoder:
    torch.manual_seed(0)
    return MobileNetV2Encoder(pretrained=False).eval()


@pytest.fixture(scope="module")
def shapes(encoder) -> dict[str, ShapeSpec]:
    return named_shapes(encoder.feature_shapes())


@pytest.fixture(scope="module")
def feats(encoder) -> list[torch.Tensor]:
    with torch.no_grad():
        return encoder(torch.randn(2, 3, 64, 64))


@pytest.fixture(scope="module")
def space() -> AuxCellSpace:
    return AuxCellSpace(NUM_CLASSES, width=16)


# ----------------------------------------------------------------------------------------------- ops
def test_primitives_are_in_the_table():
    assert set(PRIMITIVES) <= set(OPS)
    for name in ("conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "gap", "sep_conv_3x3_dil2",
                 "sep_conv_3x3_dil4", "skip"):
        assert name in PRIMITIVES
    with pytest.raises(KeyError, match="unknown operation 'nope'"):
        build_op("nope", 8)
    with pytest.raises(KeyError, match="unknown operation 'conv1x1'; known: \\['skip'\\]"):
        build_op("conv1x1", 8, {"skip": OPS["skip"]})  # a space's own table is the one looked up


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_shape_grad_eval(name):
    torch.manual_seed(0)
    op = build_op(name, 8).train()
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p_name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), p_name
    op.eval()
    with torch.no_grad():
        y1 = op(torch.randn(1, 8, 5, 7))
    assert y1.shape == (1, 8, 5, 7) and torch.isfinite(y1).all()


# ------------------------------------------------------------------------------------------- encoder
def test_encoder_shapes_measured(encoder, shapes, feats):
    assert shapes == {"c2": ShapeSpec(24, 4), "c3": ShapeSpec(32, 8), "c4": ShapeSpec(96, 16),
                      "c5": ShapeSpec(320, 32)}
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 16), (32, 8, 8), (96, 4, 4), (320, 2, 2)]
    other = MobileNetV2Encoder(out_indices=(1, 10), pretrained=False)
    assert other.feature_shapes() == [ShapeSpec(16, 2), ShapeSpec(64, 16)]
    with pytest.raises(ValueError, match="out_indices"):
        MobileNetV2Encoder(out_indices=(6, 3), pretrained=False)


def test_pretrained_weights_load():
    try:
        path = find_mobilenet_v2_weights()
    except FileNotFoundError as e:
        pytest.skip(f"ImageNet MobileNetV2 weights not installed (run tools/install.sh): {e}")
    assert path.name == "mobilenet_v2-b0353104.pth"
    # torchvision names checkpoints by the first 8 hex digits of their SHA-256
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")
    enc = MobileNetV2Encoder(pretrained=True)
    ref = load_mobilenet_v2_state_dict()
    mine = enc.state_dict()
    for key in ("features.0.0.weight", "features.17.conv.2.weight", "features.13.conv.1.1.running_var"):
        assert torch.equal(mine[key], ref[key]), key
    assert not torch.equal(MobileNetV2Encoder(pretrained=False).state_dict()["features.0.0.weight"],
                           ref["features.0.0.weight"])


def test_missing_weights_error_is_clear(monkeypatch, tmp_path):
    import densenas.backbones as bb

    def no_dist(name):
        raise bb.metadata.PackageNotFoundError(name)

    monkeypatch.delenv(bb.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(bb.metadata, "distribution", no_dist)
    monkeypatch.setattr(bb.torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tools/install.sh"):
        MobileNetV2Encoder(pretrained=True)


# ---------------------------------------------------------------------------------------------- space
def test_default_arch(space, shapes):
    arch = space.default_arch()
    space.check(arch)
    assert space.output_stride(arch, shapes) == 4
    text = space.describe(arch, shapes)
    assert "cell2" in text and "sep_conv_3x3" in text and "(s32)" in text
    for kw in (dict(num_cells=1, blocks_per_cell=1, num_inputs=2), dict(ops=["conv1x1", "gap"]),
               dict(num_cells=5, blocks_per_cell=4)):
        AuxCellSpace(3, **kw).default_arch()


@pytest.mark.parametrize("seed", range(4))
def test_sampled_arch_forward_backward(space, shapes, feats, seed):
    torch.manual_seed(seed)
    arch = space.sample(np.random.default_rng(seed))
    dec = space.build(arch, shapes)
    assert isinstance(dec, AuxCellDecoder) and dec.arch == arch
    s = dec.output_stride
    assert s == space.output_stride(arch, shapes)
    dec.train()
    out = dec(feats)
    assert isinstance(out, tuple)
    logits, aux = out
    assert logits.shape == (2, NUM_CLASSES, 64 // s, 64 // s)
    assert len(aux) == space.num_cells - 1
    for a in aux:
        assert a.shape[:2] == (2, NUM_CLASSES) and torch.isfinite(a).all()
    loss = logits.square().mean() + sum(a.square().mean() for a in aux)
    loss.backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no gradient in {arch}"
    dec.eval()
    with torch.no_grad():
        y = dec([f[:1] for f in feats])
    assert isinstance(y, torch.Tensor) and y.shape == (1, NUM_CLASSES, 64 // s, 64 // s)
    assert torch.isfinite(y).all()
    _, aux2 = dec.forward_with_aux(feats)
    assert len(aux2) == space.num_cells - 1


def test_end_to_end_backward_and_no_aux(encoder, shapes):
    torch.manual_seed(0)
    sp = AuxCellSpace(3, width=8, aux=False)
    dec = sp.build(sp.default_arch(), shapes).train()
    y = dec(encoder(torch.randn(2, 3, 64, 64)))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 16, 16)
    y.mean().backward()
    assert encoder.features[0][0].weight.grad is not None
    encoder.zero_grad(set_to_none=True)
    assert dec.forward_with_aux([f.detach() for f in encoder(torch.randn(2, 3, 64, 64))])[1] == []
    with pytest.raises(ValueError, match="4 encoder levels"):
        dec([torch.zeros(1)])
    with pytest.raises(ValueError, match=r"decodes 4 encoder level\(s\).*1 level\(s\) missing"):
        sp.build(sp.default_arch(), dict(list(shapes.items())[1:]))
    with pytest.raises(TypeError, match="must be a dict"):
        sp.build(sp.default_arch(), list(shapes.values()))


def test_mutate_changes_one_decision(space):
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(20):
        child = space.mutate(arch, rng)
        space.check(child)
        assert sum(a != b for (_, a), (_, b) in zip(arch.choices, child.choices)) == 1
        arch = child


@pytest.mark.parametrize("field,value,match", [
    ("tmpl.b0.op0", "nope", r"tmpl\.b0\.op0='nope' is not an operation"),
    ("cell1.in0", 9, r"cell1\.in0=9 out of range 0\.\.4"),
    ("cell0.in1", -1, r"cell0\.in1=-1 out of range 0\.\.3"),
    ("tmpl.b1.in1", 3, r"tmpl\.b1\.in1=3 out of range 0\.\.2"),
    ("cell2.in0", True, r"cell2\.in0=True is not an integer"),
    ("tmpl.b0.merge", "max", r"tmpl\.b0\.merge='max' is not a merge mode"),
])
def test_check_names_bad_field(space, field, value, match):
    arch = space.default_arch().replace(**{field: value})
    with pytest.raises(InvalidArch, match=match):
        space.check(arch)
    with pytest.raises(InvalidArch, match=match):
        space.build(arch, named_shapes([ShapeSpec(8, 4 * 2 ** i) for i in range(4)]))


def test_check_structure_errors(space):
    d = space.default_arch().as_dict()
    missing = Arch("auxcell", tuple((k, v) for k, v in d.items() if k != "cell2.in1"))
    with pytest.raises(InvalidArch, match="cell2.in1"):
        space.check(missing)
    with pytest.raises(InvalidArch, match="extra"):
        space.check(Arch("auxcell", tuple(d.items()) + (("extra", 1),)))
    with pytest.raises(InvalidArch, match="not 'auxcell'"):
        space.check(Arch("other", tuple(d.items())))
    dead = space.default_arch().replace(**{"tmpl.b0.in1": 0, "tmpl.b1.in1": 0})
    with pytest.raises(InvalidArch, match="cell input 1 is never read"):
        space.check(dead)


def test_json_round_trip(space, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(10):
        arch = space.sample(rng)
        back = Arch.from_json(arch.to_json())
        assert back == arch and back.key == arch.key
        space.check(back)
        arch.save(tmp_path / f"a{i}.json")
        assert Arch.load(tmp_path / f"a{i}.json") == arch


# ---------------------------------------------------------------------------------------------- mmseg
@pytest.mark.skipif(importlib.util.find_spec("mmseg") is None,
                    reason="mmsegmentation is not installed (run tools/install.sh)")
def test_mmseg_encoder_decoder_loss_and_predict(space, tmp_path):
    from mmengine.config import ConfigDict
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import densenas.tasks.segmentation.mm  # noqa: F401  (registers the modules)

    arch_path = tmp_path / "arch.json"
    space.default_arch().save(arch_path)
    for arch in (space.default_arch().to_dict(), str(arch_path)):
        cfg = dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                                   seg_pad_val=255),
            backbone=dict(type="DenseNASBackbone", backbone=dict(type="mobilenet_v2", pretrained=False)),
            decode_head=dict(type="AuxCellHead", arch=arch, in_channels=[24, 32, 96, 320],
                             in_index=[0, 1, 2, 3], channels=16, num_classes=NUM_CLASSES,
                             aux_weight=0.5, loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0)),
            train_cfg=dict(), test_cfg=dict(mode="whole"))
        model = MODELS.build(ConfigDict(cfg))  # ConfigDict: the segmentor reads test_cfg.mode
        model.init_weights()
        assert model.decode_head.decoder.output_stride == 4
        torch.manual_seed(0)
        x = torch.randn(2, 3, 64, 64)
        samples = []
        for _ in range(2):
            s = SegDataSample()
            s.gt_sem_seg = PixelData(data=torch.randint(0, NUM_CLASSES, (1, 64, 64)))
            s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                padding_size=[0, 0, 0, 0]))
            samples.append(s)
        model.train()
        losses = model.loss(x, samples)
        assert {"decode.loss_ce", "decode.loss_aux0", "decode.loss_aux1"} <= set(losses)
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total)
        total.backward()
        assert model.decode_head.decoder.aux_heads[0].classifier.weight.grad is not None
        model.eval()
        with torch.no_grad():
            preds = model.predict(x, samples)
        assert len(preds) == 2
        assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)
        assert preds[0].seg_logits.data.shape == (NUM_CLASSES, 64, 64)

    from densenas.backbones import DenseNASBackbone
    from mmseg.registry import MODELS as MMSEG_MODELS
    assert MMSEG_MODELS.get("DenseNASBackbone") is DenseNASBackbone
