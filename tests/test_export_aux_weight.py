"""An exported ``dense_map`` head trains its auxiliary heads as the search did: the weight is the search's
``evaluator.aux_weight`` (a search without auxiliary heads exports a head without them), 0.4 (Nekrasov et
al.'s) when the search does not say."""
import numpy as np
import pytest
import torch

from densenas.space import EXPORT_AUX_WEIGHT, aux_head_options

MNV2 = {"type": "mobilenet_v2"}
MNV2_TWO = {"type": "mobilenet_v2", "out_indices": (3, 6)}


def _search_cfg(space: dict, backbone: dict, evaluator: dict | None) -> dict:
    cfg = {"task": {"type": "segmentation"}, "backbone": backbone, "data": {"layout": "voc", "num_classes": 3},
           "space": space}
    if evaluator is not None:
        cfg["evaluator"] = evaluator
    return cfg


def _arch_and_section(kind: str):
    if kind == "auxcell":
        from densenas.decoders.auxcell import AuxCellSpace

        return AuxCellSpace(num_classes=3, width=16).sample(np.random.default_rng(0)), \
            {"type": "auxcell", "width": 16}, MNV2
    from densenas.decoders.template import TemplateSpace

    widths = [16, 16, 16, 16]
    return TemplateSpace(3, widths=tuple(widths)).sample(np.random.default_rng(0)), \
        {"type": "template", "widths": widths}, MNV2_TWO


@pytest.mark.parametrize("kind", ["auxcell", "template"])
@pytest.mark.parametrize("evaluator, want", [({"type": "proxy", "aux_weight": 0.0}, (False, 0.0)),
                                             ({"type": "proxy", "aux_weight": 0.25}, (True, 0.25)),
                                             ({"type": "proxy"}, (True, EXPORT_AUX_WEIGHT)),
                                             (None, (True, EXPORT_AUX_WEIGHT))])
def test_segmentation_export_follows_the_search_aux_weight(tmp_path, kind, evaluator, want):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from densenas.tasks.segmentation.task import SegmentationTask

    arch, section, backbone = _arch_and_section(kind)
    out = SegmentationTask().export(tmp_path / "seg.py", arch=arch, dataset="voc", data_root=str(tmp_path),
                                    search_cfg=_search_cfg(section, backbone, evaluator))
    cfg = Config.fromfile(str(out))
    assert (cfg.model.decode_head.aux, cfg.model.decode_head.aux_weight) == want
    if evaluator is None or evaluator.get("aux_weight") == 0.0:  # build and train one step: no loss_aux terms
        register_all_modules(init_default_scope=False)
        cfg.model.backbone.backbone.pretrained = False
        with DefaultScope.overwrite_default_scope("mmseg"):
            model = MODELS.build(cfg.model).train()
        feats = model.extract_feat(torch.rand(2, 3, 64, 64))
        from mmseg.structures import SegDataSample
        from mmengine.structures import PixelData

        samples = []
        for _ in range(2):
            s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 64, 64))))
            s.set_metainfo(dict(img_shape=(64, 64), pad_shape=(64, 64)))
            samples.append(s)
        losses = model.decode_head.loss(feats, samples, model.train_cfg)
        aux_terms = [k for k in losses if k.startswith("loss_aux")]
        assert (len(aux_terms) > 0) == want[0]


def test_keypoint_export_follows_the_search_aux_weight(tmp_path):
    from densenas.tasks.keypoints.export import head_config

    arch, section, _ = _arch_and_section("auxcell")
    codec = dict(type="UDPHeatmap", input_size=(48, 64), heatmap_size=(12, 16), sigma=2.0)
    head = head_config(arch, None, 14, [24, 32, 96, 320], [4, 8, 16, 32], codec, 16, section, aux_weight=0.0)
    assert head["type"] == "AuxCellHeatmapHead" and (head["aux"], head["aux_weight"]) == (False, 0.0)
    head = head_config(arch, None, 14, [24, 32, 96, 320], [4, 8, 16, 32], codec, 16, section)
    assert (head["aux"], head["aux_weight"]) == (True, EXPORT_AUX_WEIGHT)


def test_a_negative_aux_weight_is_refused():
    assert aux_head_options({}) == dict(aux=True, aux_weight=EXPORT_AUX_WEIGHT)
    assert aux_head_options({"aux_weight": None}) == dict(aux=True, aux_weight=EXPORT_AUX_WEIGHT)
    with pytest.raises(ValueError, match="aux_weight must be >= 0"):
        aux_head_options({"aux_weight": -0.1})
