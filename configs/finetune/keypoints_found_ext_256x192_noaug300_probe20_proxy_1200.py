# Phase 1 of a head-first (probe, then fine-tune) run of #2, as the search's proxy trains it: 20 iterations in
# which only the head learns (the backbone at lr 0, its BatchNorm frozen), no augmentation. Phase 2 is
# keypoints_found_ext_256x192_noaug300_probe20ft_proxy_1200.py (docs/depth_keypoints.md, "The proxy trains
# the fused heads better than the exported recipe does").
#   python3 tools/train.py configs/finetune/keypoints_found_ext_256x192_noaug300_probe20_proxy_1200.py
_base_ = ['./keypoints_found_ext_256x192_noaug300_proxy_1200.py']
model = dict(backbone=dict(norm_eval=True))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.0, decay_mult=0.0))))
train_cfg = dict(max_iters=20, val_interval=20)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=20, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=20))
work_dir = 'work_dirs/keypoints_found_ext_256x192_noaug300_probe20_proxy_1200'
