# NAS-FCOS (Wang et al., CVPR 2020) FPN search, stage 1, with the FPN op list extended by `conv3x3` and
# `zero` (variant "with_fpn", decoders/nasfcos.py) so that the space contains the hand-designed FPN + FCOS
# head it is compared with (baseline_archs()["fpn_fcos"]: 61,312 FPN parameters vs 60,672 of mmdet's FPN,
# the FCOS head exactly mmdet's FCOSHead), so a search warm-started with it can only improve on the baseline.
# Everything else as nasfcos_fpn_proxy.py (the paper's op list).
# python tools/search.py configs/search/nasfcos_fpn_with_fpn_proxy.py
_base_ = ["./nasfcos_fpn_proxy.py"]
work_dir = "work_dirs/nasfcos_fpn_with_fpn_proxy"
space = dict(type="nasfcos", part="fpn", width=32, variant="with_fpn")
# the baselines as this space expresses them are the first candidates (densenas/build.py: seed_baselines)
search = dict(baselines=True)
