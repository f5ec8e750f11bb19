# densenas keypoints (data: MPII layout, 128 x 96 crops, UDP codec), copied by tools/export.py next to each
# exported config. An exported config restates what differs.
train_dataloader = dict(
    batch_size=16,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='MpiiDataset',
        data_root='data/mpii',
        data_mode='topdown',
        data_prefix=dict(img='images/'),
        ann_file='annotations/mpii_train.json',
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(type='RandomFlip', direction='horizontal'),
            dict(type='RandomBBoxTransform', shift_prob=0),
            dict(type='TopdownAffine', input_size=(96, 128), use_udp=True),
            dict(
                type='GenerateTarget',
                encoder=dict(
                    type='UDPHeatmap',
                    input_size=(96, 128),
                    heatmap_size=(24, 32),
                    sigma=2.0,
                    heatmap_type='gaussian',
                    blur_kernel_size=11,
                ),
            ),
            dict(type='PackPoseInputs'),
        ],
    ),
    num_workers=2,
    persistent_workers=True,
)
val_dataloader = dict(
    batch_size=16,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type='MpiiDataset',
        data_root='data/mpii',
        data_mode='topdown',
        data_prefix=dict(img='images/'),
        ann_file='annotations/mpii_val.json',
        test_mode=True,
        headbox_file='data/mpii/annotations/mpii_gt_val.mat',
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(type='TopdownAffine', input_size=(96, 128), use_udp=True),
            dict(type='PackPoseInputs'),
        ],
    ),
    num_workers=2,
    persistent_workers=True,
)
test_dataloader = val_dataloader
val_evaluator = dict(type='MpiiPCKAccuracy')
test_evaluator = val_evaluator
