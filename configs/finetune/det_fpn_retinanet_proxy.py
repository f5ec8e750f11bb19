# Hand-designed baseline: mmdet FPN (P3-P7) + RetinaHead with the 2-conv towers of the NAS-FPN proxy search,
# on the proxy COCO set. Same as: tools/export.py --baseline fpn_retinanet --width 32 --iters 600
_base_ = ["./_base_/proxy_coco_mobilenetv2.py"]
work_dir = "work_dirs/det/fpn_retinanet"
retina = dict(
    anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                          strides=[8, 16, 32, 64, 128]),
    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
    loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
    loss_bbox=dict(type="L1Loss", loss_weight=1.0))
model = dict(
    type="RetinaNet",
    data_preprocessor=dict(pad_size_divisor=128),
    neck=dict(type="FPN", in_channels=[32, 96, 320], out_channels={{_base_.width}}, start_level=0,
              add_extra_convs="on_output", relu_before_extra_convs=True, num_outs=5),
    bbox_head=dict(type="RetinaHead", num_classes=4, in_channels={{_base_.width}}, feat_channels={{_base_.width}},
                   stacked_convs=2, **retina),
    train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms=dict(iou_threshold=0.5)))
