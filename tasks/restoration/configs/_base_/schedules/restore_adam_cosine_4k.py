# densenas restoration (schedule: Adam, cosine decay, 4,000 iterations), copied by tools/export.py next to
# each exported config.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=0.001, betas=(0.9, 0.999)))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=4000, eta_min=0.0, begin=0, end=4000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
