# Hand-designed baseline: mmseg's DepthwiseSeparableASPPHead (DeepLabV3+) regressing depth, same backbone,
# data and budget as depth_found_proxy.py. Written by
# python tools/export.py --baseline deeplabv3plus --task depth --out configs/finetune/depth_deeplabv3plus_proxy.py
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py depth_deeplabv3plus_proxy.py; test: python3 tools/test.py depth_deeplabv3plus_proxy.py CHECKPOINT
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
        type='DepthSepASPPHead',
        in_channels=320,
        in_index=3,
        channels=48,
        dilations=(1, 6, 12, 18),
        c1_in_channels=24,
        c1_channels=12,
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
work_dir = 'work_dirs/depth_deeplabv3plus'
