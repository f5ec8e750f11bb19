custom_imports = dict(
    allow_failed_imports=False, imports=[
        'densenas.tasks.keypoints.mm',
    ])
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False,
        interval=2000,
        max_keep_ckpts=1,
        rule='greater',
        save_best='coco/AP',
        type='CheckpointHook'),
    logger=dict(interval=100, log_metric_by_epoch=False, type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    timer=dict(type='IterTimerHook'))
default_scope = 'mmpose'
densenas_task = 'keypoints'
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
        std=[
            58.395,
            57.12,
            57.375,
        ],
        type='PoseDataPreprocessor'),
    head=dict(
        decoder=dict(
            blur_kernel_size=11,
            heatmap_size=(
                24,
                32,
            ),
            heatmap_type='gaussian',
            input_size=(
                96,
                128,
            ),
            sigma=2.0,
            type='UDPHeatmap'),
        deconv_kernel_sizes=(
            4,
            4,
            4,
        ),
        deconv_out_channels=(
            256,
            256,
            256,
        ),
        in_channels=320,
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        out_channels=14,
        type='HeatmapHead'),
    test_cfg=dict(flip_mode='heatmap', flip_test=True, shift_heatmap=False),
    type='TopdownPoseEstimator')
optim_wrapper = dict(
    optimizer=dict(lr=0.001, type='AdamW', weight_decay=0.0001),
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
    batch_size=16,
    dataset=dict(
        ann_file='annotations/person_keypoints_val2017.json',
        data_mode='topdown',
        data_prefix=dict(img='val2017/'),
        data_root='data/proxy_kpt',
        metainfo=dict(from_file='data/proxy_kpt/metainfo.py'),
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(input_size=(
                96,
                128,
            ), type='TopdownAffine', use_udp=True),
            dict(type='PackPoseInputs'),
        ],
        test_mode=True,
        type='CocoHeadSizeDataset'),
    drop_last=False,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(round_up=False, shuffle=False, type='DefaultSampler'))
test_evaluator = [
    dict(
        ann_file='data/proxy_kpt/annotations/person_keypoints_val2017.json',
        type='CocoMetric'),
    dict(norm_item='head', prefix='pckh@0.5', thr=0.5, type='PCKAccuracy'),
    dict(norm_item='head', prefix='pckh@0.1', thr=0.1, type='PCKAccuracy'),
]
train_cfg = dict(max_iters=2000, type='IterBasedTrainLoop', val_interval=2000)
train_dataloader = dict(
    batch_size=16,
    dataset=dict(
        ann_file='annotations/person_keypoints_train2017.json',
        data_mode='topdown',
        data_prefix=dict(img='train2017/'),
        data_root='data/proxy_kpt',
        metainfo=dict(from_file='data/proxy_kpt/metainfo.py'),
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(direction='horizontal', type='RandomFlip'),
            dict(type='RandomBBoxTransform'),
            dict(input_size=(
                96,
                128,
            ), type='TopdownAffine', use_udp=True),
            dict(
                encoder=dict(
                    blur_kernel_size=11,
                    heatmap_size=(
                        24,
                        32,
                    ),
                    heatmap_type='gaussian',
                    input_size=(
                        96,
                        128,
                    ),
                    sigma=2.0,
                    type='UDPHeatmap'),
                type='GenerateTarget'),
            dict(type='PackPoseInputs'),
        ],
        type='CocoHeadSizeDataset'),
    num_workers=2,
    persistent_workers=True,
    sampler=dict(shuffle=True, type='InfiniteSampler'))
val_cfg = dict(type='ValLoop')
val_dataloader = dict(
    batch_size=16,
    dataset=dict(
        ann_file='annotations/person_keypoints_val2017.json',
        data_mode='topdown',
        data_prefix=dict(img='val2017/'),
        data_root='data/proxy_kpt',
        metainfo=dict(from_file='data/proxy_kpt/metainfo.py'),
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(input_size=(
                96,
                128,
            ), type='TopdownAffine', use_udp=True),
            dict(type='PackPoseInputs'),
        ],
        test_mode=True,
        type='CocoHeadSizeDataset'),
    drop_last=False,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(round_up=False, shuffle=False, type='DefaultSampler'))
val_evaluator = [
    dict(
        ann_file='data/proxy_kpt/annotations/person_keypoints_val2017.json',
        type='CocoMetric'),
    dict(norm_item='head', prefix='pckh@0.5', thr=0.5, type='PCKAccuracy'),
    dict(norm_item='head', prefix='pckh@0.1', thr=0.1, type='PCKAccuracy'),
]
work_dir = 'work_dirs/finetune_kpt_heatmap'
