# densenas keypoints (data: the bundled proxy set (COCO layout with head sizes), 128 x 96 crops, UDP codec),
# copied by tools/export.py next to each exported config. An exported config restates what differs.
train_dataloader = dict(
    batch_size=16,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CocoHeadSizeDataset',
        data_root='data/proxy_kpt',
        data_mode='topdown',
        metainfo=dict(from_file='data/proxy_kpt/metainfo.py'),
        ann_file='annotations/person_keypoints_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=[
            dict(type='LoadImage'),
            dict(type='GetBBoxCenterScale'),
            dict(type='RandomFlip', direction='horizontal'),
            dict(type='RandomBBoxTransform'),
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
        type='CocoHeadSizeDataset',
        data_root='data/proxy_kpt',
        data_mode='topdown',
        metainfo=dict(from_file='data/proxy_kpt/metainfo.py'),
        ann_file='annotations/person_keypoints_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
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
val_evaluator = [
    dict(type='CocoMetric', ann_file='data/proxy_kpt/annotations/person_keypoints_val2017.json'),
    dict(type='PCKAccuracy', thr=0.5, norm_item='head', prefix='pckh@0.5'),
    dict(type='PCKAccuracy', thr=0.1, norm_item='head', prefix='pckh@0.1'),
]
test_evaluator = val_evaluator
