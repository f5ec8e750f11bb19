# The aux-cell decoder search (auxcell_proxy.py) in the space's extended variant, which can express the
# baselines it is compared with: per encoder level a projection decision (enc{i}.proj: the paper's conv1x1,
# DeepLabV3's ASPP or DeepLabV3+'s separable ASPP on the raw level) and a fusion decision (head.fuse: the
# paper's conv1x1 or DeepLabV3+'s two 3x3 separable convs, Chen et al., ECCV 2018). The paper's variant
# (auxcell_proxy.py) stays the default. The baselines as this space expresses them:
# AuxCellSpace(..., **EXTENDED).baseline_archs() -> {"aspp", "deeplabv3plus"} (densenas/decoders/auxcell.py).
# python tools/search.py configs/search/auxcell_ext_proxy.py
_base_ = ["./auxcell_proxy.py"]
work_dir = "work_dirs/auxcell_ext_proxy"
space = dict(type="auxcell", width=48, num_cells=3, blocks_per_cell=2,
             proj_ops=["conv1x1", "aspp", "sep_aspp"], fuse_ops=["conv1x1", "sep_conv_3x3_x2"])
# the baselines as this space expresses them are the first candidates (densenas/build.py: seed_baselines)
search = dict(baselines=True)
