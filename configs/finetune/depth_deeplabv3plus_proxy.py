# Hand-designed baseline: mmseg's DepthwiseSeparableASPPHead (DeepLabV3+) regressing depth, same backbone,
# data and budget as depth_found_proxy.py. Written by
# python tools/export.py --baseline deeplabv3plus --task depth --out configs/finetune/depth_deeplabv3plus_proxy.py
custom_imports = dict(
    allow_failed_imports=False,
    imports=[
        'densenas.tasks.segmentation.mm',
        'densenas.tasks.depth.mm',
    ])
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False,
        interval=2000,
        max_keep_ckpts=1,
        rule='less',
        save_best='rmse',
        type='CheckpointHook'),
    logger=dict(interval=100, log_metric_by_epoch=False, type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    timer=dict(type='IterTimerHook'))
default_scope = 'mmseg'
densenas_task = 'depth'
env_cfg = dict(
    cudnn_benchmark=False,
    dist_cfg=dict(backend='nccl'),
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
load_from = None
log_level = 'INFO'
log_processor = dict(by_epoch=False)
model = dict(
    backbone=dict(
        backbone=dict(pretrained=True, type='mobilenet_v2'),
        type='DenseNASBackbone'),
    data_preprocessor=dict(
        bgr_to_rgb=True,
        mean=[
            123.675,
            116.28,
            103.53,
        ],
        pad_val=0,
        seg_pad_val=0,
        size_divisor=32,
        std=[
            58.395,
            57.12,
            57.375,
        ],
        test_cfg=dict(size_divisor=32),
        type='SegDataPreProcessor'),
    decode_head=dict(
        align_corners=False,
        c1_channels=12,
        c1_in_channels=24,
        channels=48,
        dilations=(
            1,
            6,
            12,
            18,
        ),
        dropout_ratio=0.1,
        in_channels=320,
        in_index=3,
        loss_decode=dict(type='SiLogLoss'),
        max_depth=10.0,
        norm_cfg=dict(requires_grad=True, type='BN'),
        num_classes=1,
        type='DepthSepASPPHead'),
    test_cfg=dict(mode='whole'),
    train_cfg=dict(),
    type='DepthEstimator')
optim_wrapper = dict(
    optimizer=dict(lr=0.003, type='AdamW', weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))),
    type='OptimWrapper')
param_scheduler = [
    dict(
        begin=0,
        by_epoch=False,
        end=2000,
        eta_min=0.0,
        power=0.9,
        type='PolyLR'),
]
randomness = dict(seed=0)
resume = False
test_cfg = dict(type='TestLoop')
test_dataloader = dict(
    batch_size=1,
    dataset=dict(
        data_prefix=dict(
            depth_map_path='annotations/test', img_path='images/test'),
        data_root='data/proxy_nyu',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(depth_rescale_factor=0.001, type='LoadDepthAnnotation'),
            dict(
                meta_keys=(
                    'img_path',
                    'depth_map_path',
                    'ori_shape',
                    'img_shape',
                    'pad_shape',
                    'scale_factor',
                    'flip',
                    'flip_direction',
                    'category_id',
                ),
                type='PackSegInputs'),
        ],
        test_mode=True,
        type='NYUDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=False, type='DefaultSampler'))
test_evaluator = dict(
    crop_type=None,
    max_depth_eval=10.0,
    min_depth_eval=0.001,
    type='DepthMetric')
train_cfg = dict(max_iters=2000, type='IterBasedTrainLoop', val_interval=2000)
train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        data_prefix=dict(
            depth_map_path='annotations/train', img_path='images/train'),
        data_root='data/proxy_nyu',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(depth_rescale_factor=0.001, type='LoadDepthAnnotation'),
            dict(prob=0.25, type='RandomDepthMix'),
            dict(prob=0.5, type='RandomFlip'),
            dict(crop_size=(
                96,
                96,
            ), type='RandomCrop'),
            dict(type='PhotoMetricDistortion'),
            dict(
                meta_keys=(
                    'img_path',
                    'depth_map_path',
                    'ori_shape',
                    'img_shape',
                    'pad_shape',
                    'scale_factor',
                    'flip',
                    'flip_direction',
                    'category_id',
                ),
                type='PackSegInputs'),
        ],
        type='NYUDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=True, type='InfiniteSampler'))
val_cfg = dict(type='ValLoop')
val_dataloader = dict(
    batch_size=1,
    dataset=dict(
        data_prefix=dict(
            depth_map_path='annotations/test', img_path='images/test'),
        data_root='data/proxy_nyu',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(depth_rescale_factor=0.001, type='LoadDepthAnnotation'),
            dict(
                meta_keys=(
                    'img_path',
                    'depth_map_path',
                    'ori_shape',
                    'img_shape',
                    'pad_shape',
                    'scale_factor',
                    'flip',
                    'flip_direction',
                    'category_id',
                ),
                type='PackSegInputs'),
        ],
        test_mode=True,
        type='NYUDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=False, type='DefaultSampler'))
val_evaluator = dict(
    crop_type=None,
    max_depth_eval=10.0,
    min_depth_eval=0.001,
    type='DepthMetric')
vis_backends = [
    dict(type='LocalVisBackend'),
]
visualizer = dict(
    name='visualizer',
    type='SegLocalVisualizer',
    vis_backends=[
        dict(type='LocalVisBackend'),
    ])
work_dir = 'work_dirs/depth_deeplabv3plus'
