# Hand-designed baseline: mmseg's FCNHead regressing depth, same backbone, data and budget as
# depth_found_proxy.py. Written by
# python tools/export.py --baseline fcn --task depth --out configs/finetune/depth_fcn_proxy.py
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py depth_fcn_proxy.py; test: python3 tools/test.py depth_fcn_proxy.py CHECKPOINT
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
        type='DepthFCNHead',
        in_channels=320,
        in_index=3,
        channels=48,
        num_convs=2,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=1,
        max_depth=10.0,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='SiLogLoss'),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
work_dir = 'work_dirs/depth_fcn'
