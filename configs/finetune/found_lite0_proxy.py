# The decoder found by configs/search/auxcell_lite0_proxy.py (candidate #19, reward 0.826) on the pretrained
# EfficientNet-Lite0, as tools/export.py wrote it (--iters 600); docs/measurements.md: 81.94 mIoU on the proxy val set.
custom_imports = dict(
    allow_failed_imports=False, imports=[
        'densenas.tasks.segmentation.mm',
    ])
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False,
        interval=600,
        max_keep_ckpts=1,
        save_best='mIoU',
        type='CheckpointHook'),
    logger=dict(interval=30, log_metric_by_epoch=False, type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    timer=dict(type='IterTimerHook'),
    visualization=dict(type='SegVisualizationHook'))
default_scope = 'mmseg'
densenas_task = 'segmentation'
env_cfg = dict(
    cudnn_benchmark=False,
    dist_cfg=dict(backend='nccl'),
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
load_from = None
log_level = 'INFO'
log_processor = dict(by_epoch=False)
model = dict(
    backbone=dict(
        backbone=dict(pretrained=True, type='efficientnet_lite0'),
        type='DenseNASBackbone'),
    data_preprocessor=dict(
        bgr_to_rgb=True,
        mean=[
            123.675,
            116.28,
            103.53,
        ],
        pad_val=0,
        seg_pad_val=255,
        size=None,
        size_divisor=32,
        std=[
            58.395,
            57.12,
            57.375,
        ],
        type='SegDataPreProcessor'),
    decode_head=dict(
        align_corners=False,
        arch=dict(
            choices=dict({
                'cell0.in0': 0,
                'cell0.in1': 0,
                'cell1.in0': 0,
                'cell1.in1': 0,
                'cell2.in0': 2,
                'cell2.in1': 3,
                'tmpl.b0.in0': 1,
                'tmpl.b0.in1': 0,
                'tmpl.b0.merge': 'concat',
                'tmpl.b0.op0': 'skip',
                'tmpl.b0.op1': 'conv1x1',
                'tmpl.b1.in0': 0,
                'tmpl.b1.in1': 2,
                'tmpl.b1.merge': 'concat',
                'tmpl.b1.op0': 'conv1x1',
                'tmpl.b1.op1': 'conv3x3'
            }),
            format=1,
            space='auxcell'),
        aux=True,
        aux_weight=0.4,
        channels=48,
        in_channels=[
            24,
            40,
            112,
            320,
        ],
        in_index=[
            0,
            1,
            2,
            3,
        ],
        loss_decode=dict(
            loss_weight=1.0, type='CrossEntropyLoss', use_sigmoid=False),
        norm_cfg=dict(requires_grad=True, type='BN'),
        num_classes=6,
        type='AuxCellHead'),
    test_cfg=dict(mode='whole'),
    train_cfg=dict(),
    type='EncoderDecoder')
optim_wrapper = dict(
    optimizer=dict(lr=0.003, type='AdamW', weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))),
    type='OptimWrapper')
param_scheduler = [
    dict(
        begin=0,
        by_epoch=False,
        end=600,
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
        ann_file='ImageSets/Segmentation/val.txt',
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        data_root='data/proxy_voc',
        img_suffix='.jpg',
        metainfo=dict(
            classes=[
                'background',
                'coffee',
                'cat',
                'tissue',
                'galaxy',
                'grass',
            ],
            palette=[
                [
                    0,
                    0,
                    0,
                ],
                [
                    128,
                    0,
                    0,
                ],
                [
                    0,
                    128,
                    0,
                ],
                [
                    128,
                    128,
                    0,
                ],
                [
                    0,
                    0,
                    128,
                ],
                [
                    128,
                    0,
                    128,
                ],
            ]),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(keep_ratio=True, scale=(
                128,
                128,
            ), type='Resize'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ],
        seg_map_suffix='.png',
        type='BaseSegDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=False, type='DefaultSampler'))
test_evaluator = dict(
    iou_metrics=[
        'mIoU',
    ], type='IoUMetric')
train_cfg = dict(max_iters=600, type='IterBasedTrainLoop', val_interval=600)
train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        data_root='data/proxy_voc',
        img_suffix='.jpg',
        metainfo=dict(
            classes=[
                'background',
                'coffee',
                'cat',
                'tissue',
                'galaxy',
                'grass',
            ],
            palette=[
                [
                    0,
                    0,
                    0,
                ],
                [
                    128,
                    0,
                    0,
                ],
                [
                    0,
                    128,
                    0,
                ],
                [
                    128,
                    128,
                    0,
                ],
                [
                    0,
                    0,
                    128,
                ],
                [
                    128,
                    0,
                    128,
                ],
            ]),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(
                keep_ratio=True,
                ratio_range=(
                    0.75,
                    1.5,
                ),
                scale=(
                    128,
                    128,
                ),
                type='RandomResize'),
            dict(
                cat_max_ratio=0.75, crop_size=(
                    128,
                    128,
                ), type='RandomCrop'),
            dict(prob=0.5, type='RandomFlip'),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs'),
        ],
        seg_map_suffix='.png',
        type='BaseSegDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=True, type='InfiniteSampler'))
val_cfg = dict(type='ValLoop')
val_dataloader = dict(
    batch_size=1,
    dataset=dict(
        ann_file='ImageSets/Segmentation/val.txt',
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        data_root='data/proxy_voc',
        img_suffix='.jpg',
        metainfo=dict(
            classes=[
                'background',
                'coffee',
                'cat',
                'tissue',
                'galaxy',
                'grass',
            ],
            palette=[
                [
                    0,
                    0,
                    0,
                ],
                [
                    128,
                    0,
                    0,
                ],
                [
                    0,
                    128,
                    0,
                ],
                [
                    128,
                    128,
                    0,
                ],
                [
                    0,
                    0,
                    128,
                ],
                [
                    128,
                    0,
                    128,
                ],
            ]),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(keep_ratio=True, scale=(
                128,
                128,
            ), type='Resize'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ],
        seg_map_suffix='.png',
        type='BaseSegDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=False, type='DefaultSampler'))
val_evaluator = dict(
    iou_metrics=[
        'mIoU',
    ], type='IoUMetric')
vis_backends = [
    dict(type='LocalVisBackend'),
]
visualizer = dict(
    name='visualizer',
    type='SegLocalVisualizer',
    vis_backends=[
        dict(type='LocalVisBackend'),
    ])
work_dir = 'work_dirs/ft_found_lite0'
