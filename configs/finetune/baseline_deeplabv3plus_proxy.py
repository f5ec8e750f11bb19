# Baseline: DeepLab-v3+ head (mmseg DepthwiseSeparableASPPHead): ASPP on stride 32 + stride-4 features.
_base_ = ["./_base_/proxy_mobilenetv2.py"]
work_dir = "work_dirs/ft_deeplabv3plus"
model = dict(decode_head=dict(
    type="DepthwiseSeparableASPPHead", in_channels=320, in_index=3, channels=128,
    dilations=(1, 6, 12, 18), c1_in_channels=24, c1_channels=32, dropout_ratio=0.1, num_classes=6,
    norm_cfg={{_base_.norm_cfg}}, align_corners=False,
    loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)))
