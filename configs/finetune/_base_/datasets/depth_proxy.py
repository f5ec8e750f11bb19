# densenas depth (data: the bundled proxy set (NYU layout), 96 px crops), copied by tools/export.py next to
# each exported config. An exported config restates what differs.
train_dataloader = dict(
    batch_size=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='NYUDataset',
        data_root='data/proxy_nyu',
        data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadDepthAnnotation', depth_rescale_factor=0.001),
            dict(type='RandomDepthMix', prob=0.25),
            dict(type='RandomFlip', prob=0.5),
            dict(type='RandomCrop', crop_size=(96, 96)),
            dict(type='PhotoMetricDistortion'),
            dict(
                type='PackSegInputs',
                meta_keys=(
                    'img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                    'flip', 'flip_direction', 'category_id',
                ),
            ),
        ],
    ),
    num_workers=2,
    persistent_workers=True,
)
val_dataloader = dict(
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='NYUDataset',
        data_root='data/proxy_nyu',
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadDepthAnnotation', depth_rescale_factor=0.001),
            dict(
                type='PackSegInputs',
                meta_keys=(
                    'img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                    'flip', 'flip_direction', 'category_id',
                ),
            ),
        ],
    ),
    num_workers=2,
    persistent_workers=True,
)
test_dataloader = val_dataloader
val_evaluator = dict(type='DepthMetric', min_depth_eval=0.001, max_depth_eval=10.0, crop_type=None)
test_evaluator = val_evaluator
