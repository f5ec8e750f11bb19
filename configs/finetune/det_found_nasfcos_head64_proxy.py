# The NAS-FCOS head searched on mmdet's FPN at 64 channels under FPN-FCOS's parameters
# (configs/search/nasfcos_head_with_fpn64_proxy.py, candidate #31: a dilated separable 3x3 conv then a deformable 3x3
# conv, both shared across levels; docs/detection.md), fine-tuned 600 iterations on the 256 / 128-image proxy COCO set.
# Written by python tools/export.py work_dirs/nasfcos_head_with_fpn64_proxy/best_arch.json --iters 600 \
#     --data-root data/proxy_coco_big --out configs/finetune/det_found_nasfcos_head64_proxy.py
# (the absolute data root it writes made relative, and the _base_ entries pointed at the task's own base files,
# as in the other shipped configs). Baseline at the same budget: --baseline fpn_fcos --width 64.
_base_ = [
    '../../tasks/detection/configs/_base_/datasets/det_coco.py',
    '../../tasks/detection/configs/_base_/schedules/det_adamw_cosine_2k.py',
    '../../tasks/detection/configs/_base_/det_runtime.py',
]
densenas_task = 'detection'
custom_imports = dict(imports=['densenas.tasks.detection.mm'], allow_failed_imports=False)
model = dict(
    type='FCOS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    backbone=dict(
        type='DenseNASBackbone',
        backbone=dict(out_indices=(6, 13, 17), pretrained=True, type='mobilenet_v2'),
    ),
    neck=dict(
        type='NASFCOSSearchedFPN',
        arch=dict(
            format=1,
            space='nasfcos_fpn',
            choices={
                'fpn.cell0.in0': 2,
                'fpn.cell0.in1': 2,
                'fpn.cell0.op0': 'skip',
                'fpn.cell0.op1': 'zero',
                'fpn.cell0.agg': 'sum',
                'fpn.cell1.in0': 3,
                'fpn.cell1.in1': 3,
                'fpn.cell1.op0': 'skip',
                'fpn.cell1.op1': 'zero',
                'fpn.cell1.agg': 'sum',
                'fpn.cell2.in0': 1,
                'fpn.cell2.in1': 4,
                'fpn.cell2.op0': 'skip',
                'fpn.cell2.op1': 'skip',
                'fpn.cell2.agg': 'sum',
                'fpn.cell3.in0': 0,
                'fpn.cell3.in1': 5,
                'fpn.cell3.op0': 'skip',
                'fpn.cell3.op1': 'skip',
                'fpn.cell3.agg': 'sum',
                'fpn.cell4.in0': 4,
                'fpn.cell4.in1': 4,
                'fpn.cell4.op0': 'conv3x3',
                'fpn.cell4.op1': 'zero',
                'fpn.cell4.agg': 'sum',
                'fpn.cell5.in0': 5,
                'fpn.cell5.in1': 5,
                'fpn.cell5.op0': 'conv3x3',
                'fpn.cell5.op1': 'zero',
                'fpn.cell5.agg': 'sum',
                'fpn.cell6.in0': 6,
                'fpn.cell6.in1': 6,
                'fpn.cell6.op0': 'conv3x3',
                'fpn.cell6.op1': 'zero',
                'fpn.cell6.agg': 'sum',
            },
        ),
        in_channels=[32, 96, 320],
        out_channels=64,
        num_outs=5,
    ),
    bbox_head=dict(
        type='NASFCOSSearchedHead',
        arch=dict(
            format=1,
            space='nasfcos_head',
            choices={
                'head.op0': 'gn_sep_conv_3x3_dil3',
                'head.op1': 'skip',
                'head.op2': 'gn_deform_conv3x3',
                'head.op3': 'skip',
                'head.op4': 'skip',
                'head.op5': 'skip',
                'head.shared': 5,
            },
        ),
        num_classes=4,
        in_channels=64,
        feat_channels=64,
        strides=[8, 16, 32, 64, 128],
        shared_position='last',
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    ),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100,
    ),
)
train_dataloader = dict(dataset=dict(data_root='data/proxy_coco_big'))
val_dataloader = dict(dataset=dict(data_root='data/proxy_coco_big'))
test_dataloader = dict(dataset=dict(data_root='data/proxy_coco_big'))
val_evaluator = dict(ann_file='data/proxy_coco_big/annotations/instances_val.json')
test_evaluator = dict(ann_file='data/proxy_coco_big/annotations/instances_val.json')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', eta_min=1e-05, begin=60, end=600, T_max=540, by_epoch=False),
]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(logger=dict(interval=30), checkpoint=dict(interval=600))
work_dir = 'work_dirs/det/found_nasfcos_head64'
