"""mmseg's hand-designed compact segmentation networks as baselines for compact-model searches.

Nekrasov et al. ("Template-Based Automatic Search of Compact Semantic Segmentation Architectures", WACV
2020) compare their sub-0.5M-parameter networks with hand-designed compact ones. These are mmseg 1.2.2's own
models with the settings of mmseg's configs (``configs/cgnet``, ``configs/fastscnn``, ``configs/erfnet``),
whole networks trained from scratch (no ImageNet weights ship offline for them), exported by
``tools/export.py --baseline cgnet|fastscnn|erfnet`` with the same data pipeline and schedule as the found
models:

* **CGNet** (Wu et al., "CGNet: A Light-weight Context Guided Network for Semantic Segmentation", TIP 2020):
  0.49 M parameters with 6 classes;
* **Fast-SCNN** (Poudel et al., BMVC 2019): 1.40 M;
* **ERFNet** (Romera et al., T-ITS 2018): 2.08 M.
"""
from __future__ import annotations

from typing import Any

COMPACT = ("cgnet", "fastscnn", "erfnet")


def compact_model(name: str, num_classes: int, common: dict[str, Any]) -> dict[str, Any]:
    """The ``backbone`` and ``decode_head`` of compact network ``name`` (``common``: the head settings every
    baseline shares: ``num_classes``, ``norm_cfg``, ``align_corners``, ``loss_decode``)."""
    norm = common["norm_cfg"]
    if name == "cgnet":
        backbone = dict(type="CGNet", norm_cfg=norm, in_channels=3, num_channels=(32, 64, 128),
                        num_blocks=(3, 21), dilations=(2, 4), reductions=(8, 16))
        head = dict(type="FCNHead", in_channels=256, in_index=2, channels=256, num_convs=0,
                    concat_input=False, dropout_ratio=0, **common)
    elif name == "fastscnn":
        backbone = dict(type="FastSCNN", downsample_dw_channels=(32, 48), global_in_channels=64,
                        global_block_channels=(64, 96, 128), global_block_strides=(2, 2, 1),
                        global_out_channels=128, higher_in_channels=64, lower_in_channels=128,
                        fusion_out_channels=128, out_indices=(0, 1, 2), norm_cfg=norm, align_corners=False)
        head = dict(type="DepthwiseSeparableFCNHead", in_channels=128, channels=128, concat_input=False,
                    in_index=-1, **common)
    elif name == "erfnet":
        backbone = dict(type="ERFNet", in_channels=3, enc_downsample_channels=(16, 64, 128),
                        enc_stage_non_bottlenecks=(5, 8), enc_non_bottleneck_dilations=(2, 4, 8, 16),
                        enc_non_bottleneck_channels=(64, 128), dec_upsample_channels=(64, 16),
                        dec_stages_non_bottleneck=(2, 2), dec_non_bottleneck_channels=(64, 16),
                        dropout_ratio=0.1)
        head = dict(type="FCNHead", in_channels=16, channels=128, num_convs=1, concat_input=False,
                    dropout_ratio=0.1, **common)
    else:
        raise ValueError(f"compact baseline {name!r}: use one of {list(COMPACT)}")
    return dict(backbone=backbone, decode_head=head)
