# The keypoint search (keypoints_proxy.py) in the aux-cell space's extended variant, which holds mmpose's
# HeatmapHead (SimpleBaseline, Xiao et al., ECCV 2018): enc3.proj='deconv' is its three 4x4 stride-2
# deconvolutions on the stride-32 level, the classifier its final 1x1 conv. Per encoder level a projection
# decision (enc{i}.proj: the paper's conv1x1, DeepLabV3's ASPP, DeepLabV3+'s separable ASPP, and on the deepest
# level the deconvolution stack) and a fusion decision (head.fuse: conv1x1 or DeepLabV3+'s two separable
# convs). The baselines as this space expresses them, proposed first:
# AuxCellSpace(..., **EXTENDED, task="keypoints").baseline_archs() -> {"aspp", "deeplabv3plus", "heatmap"}.
# Caveat (measured, seed 0): the heatmap point's auxiliary heads classify its deconvolution features times 9
# and 27 (relay cells of skip ops), which with aux_weight=0.4 swamp its loss: PCKh@0.5 0.004 here vs 0.296
# with evaluator.aux_weight=0. Its proxy score understates mmpose's HeatmapHead.
# python tools/search.py configs/search/keypoints_ext_proxy.py
_base_ = ["./keypoints_proxy.py"]
work_dir = "work_dirs/keypoints_ext_proxy"
space = dict(type="auxcell", width=48, num_cells=3, blocks_per_cell=2,
             proj_ops=["conv1x1", "aspp", "sep_aspp", "deconv"], fuse_ops=["conv1x1", "sep_conv_3x3_x2"])
search = dict(baselines=True)
