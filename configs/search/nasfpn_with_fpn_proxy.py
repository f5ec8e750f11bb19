# NAS-FPN (Ghiasi et al., CVPR 2019) extended so that it contains the hand-designed FPN it is compared with
# (variant "with_fpn", decoders/nasfpn.py: a `first` op and a per-cell `post` choice -- the paper's
# ReLU-conv3x3-BN, FPN's plain conv3x3 or nothing). Its baseline_archs() gives the FPN as an arch of this
# space (59,712 parameters vs 60,672 of mmdet's FPN at width 32), so a search warm-started with it can only
# improve on the baseline. Everything else as nasfpn_proxy.py (the paper's space).
# python tools/search.py configs/search/nasfpn_with_fpn_proxy.py
_base_ = ["./nasfpn_proxy.py"]
work_dir = "work_dirs/nasfpn_with_fpn_proxy"
space = dict(type="nasfpn", out_channels=32, stack=1, variant="with_fpn")
# the baselines as this space expresses them are the first candidates (densenas/build.py: seed_baselines)
search = dict(baselines=True)
