# Baseline: FCN head (mmseg FCNHead, two 3x3 convs) on the stride-32 MobileNetV2 features.
_base_ = ["./_base_/proxy_mobilenetv2.py"]
work_dir = "work_dirs/ft_fcn"
model = dict(decode_head=dict(
    type="FCNHead", in_channels=320, in_index=3, channels=128, num_convs=2, concat_input=False,
    dropout_ratio=0.1, num_classes=6, norm_cfg={{_base_.norm_cfg}}, align_corners=False,
    loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)))
