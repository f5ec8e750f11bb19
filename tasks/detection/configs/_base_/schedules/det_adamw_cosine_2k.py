# densenas detection (schedule: AdamW, linear warm-up then cosine decay, 2,000 iterations, gradient
# clipping), copied by tools/export.py next to each exported config.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', eta_min=1e-05, begin=200, end=2000, T_max=1800, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2000, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
