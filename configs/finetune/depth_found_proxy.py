# The decoder found by the default segmentation search (work_dirs/auxcell_proxy_newcomer/best_arch.json,
# candidate #36) transferred to monocular depth on the proxy depth set (mmseg DepthEstimator). Written by
# python tools/export.py work_dirs/auxcell_proxy_newcomer/best_arch.json --task depth --width 48 --out configs/finetune/depth_found_proxy.py
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py depth_found_proxy.py; test: python3 tools/test.py depth_found_proxy.py CHECKPOINT
_base_ = [
    '../../tasks/depth/configs/_base_/datasets/depth_proxy.py',
    '../../tasks/depth/configs/_base_/schedules/depth_adamw_poly_2k.py',
    '../../tasks/depth/configs/_base_/depth_runtime.py',
]
densenas_task = 'depth'
custom_imports = dict(imports=['densenas.tasks.depth.mm'], allow_failed_imports=False)
model = dict(
    type='DepthEstimator',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=0,
        size_divisor=32,
        test_cfg=dict(size_divisor=32),
    ),
    backbone=dict(type='DenseNASBackbone', backbone=dict(type='mobilenet_v2', pretrained=True)),
    decode_head=dict(
        type='DepthAuxCellHead',
        arch=dict(
            format=1,
            space='auxcell',
            choices={
                'cell0.in0': 0,
                'cell0.in1': 2,
                'cell1.in0': 1,
                'cell1.in1': 1,
                'cell2.in0': 3,
                'cell2.in1': 0,
                'tmpl.b0.in0': 0,
                'tmpl.b0.in1': 1,
                'tmpl.b0.merge': 'sum',
                'tmpl.b0.op0': 'conv3x3',
                'tmpl.b0.op1': 'conv1x1',
                'tmpl.b1.in0': 1,
                'tmpl.b1.in1': 1,
                'tmpl.b1.merge': 'concat',
                'tmpl.b1.op0': 'sep_conv_5x5',
                'tmpl.b1.op1': 'conv3x3',
            },
        ),
        in_channels=[24, 32, 96, 320],
        in_index=[0, 1, 2, 3],
        channels=48,
        aux=True,
        aux_weight=0.4,
        num_classes=1,
        max_depth=10.0,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='SiLogLoss'),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
work_dir = 'work_dirs/depth_found'
