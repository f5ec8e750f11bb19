# NAS-FCOS (Wang et al., CVPR 2020), stage 2 of the progressive search: the head (a sequence of ops and
# how many of its layers are shared across pyramid levels) with the FPN fixed to the best one of
# nasfcos_fpn_proxy.py (run that first; or point fixed_fpn at any FPN arch JSON; None = the paper's FPN).
# python tools/search.py configs/search/nasfcos_head_proxy.py
_base_ = ["./nasfcos_fpn_proxy.py"]
work_dir = "work_dirs/nasfcos_head_proxy"
space = dict(type="nasfcos", part="head", width=32,
             fixed_fpn="work_dirs/nasfcos_fpn_proxy/best_arch.json")
