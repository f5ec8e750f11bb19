# Baseline: DeepLab-v3 ASPP head (mmseg ASPPHead) on the stride-32 MobileNetV2 features.
_base_ = ["./_base_/proxy_mobilenetv2.py"]
work_dir = "work_dirs/ft_aspp"
model = dict(decode_head=dict(
    type="ASPPHead", in_channels=320, in_index=3, channels=128, dilations=(1, 6, 12, 18),
    dropout_ratio=0.1, num_classes=6, norm_cfg={{_base_.norm_cfg}}, align_corners=False,
    loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)))
