# Hand-designed baseline: mmdet FPN (P3-P7) + FCOSHead (4 shared 3x3 conv-GN layers per branch) at the
# search width, on the proxy COCO set. Same as: tools/export.py --baseline fpn_fcos --width 32 --iters 600
_base_ = ["./_base_/proxy_coco_mobilenetv2.py"]
work_dir = "work_dirs/det/fpn_fcos"
model = dict(
    neck=dict(type="FPN", in_channels=[32, 96, 320], out_channels={{_base_.width}}, start_level=0,
              add_extra_convs="on_output", relu_before_extra_convs=True, num_outs=5),
    bbox_head=dict(type="FCOSHead", num_classes=4, in_channels={{_base_.width}}, feat_channels={{_base_.width}},
                   stacked_convs=4, strides=[8, 16, 32, 64, 128],
                   norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type="IoULoss", loss_weight=1.0),
                   loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)))
