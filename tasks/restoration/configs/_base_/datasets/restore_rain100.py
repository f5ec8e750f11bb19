# densenas restoration (data: Rain100 layout, deraining, 64 px crops), copied by tools/export.py next to
# each exported config. An exported config restates what differs.
train_dataloader = dict(
    batch_size=16,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='DenseNASRestorationDataset',
        data_root='data/rain100',
        layout='rain100',
        task='derain',
        sigma=25.0,
        channels=3,
        seed=0,
        split='train',
        crop=64,
        test_mode=False,
    ),
    num_workers=2,
    persistent_workers=True,
    collate_fn=dict(type='pseudo_collate'),
)
val_dataloader = dict(
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    num_workers=2,
    persistent_workers=True,
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type='DenseNASRestorationDataset',
        data_root='data/rain100',
        layout='rain100',
        task='derain',
        sigma=25.0,
        channels=3,
        seed=0,
        split='val',
        crop=None,
        test_mode=True,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='DenseNASRestorationMetric')
test_evaluator = val_evaluator
