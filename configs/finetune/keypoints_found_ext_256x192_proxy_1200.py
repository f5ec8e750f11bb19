# The pick (#2) of configs/search/keypoints_ext_proxy_1200.py (keypoints_found_ext_proxy_1200.py) at mmpose's
# COCO input size, 256 x 192 (heatmaps 64 x 48, UDP), with a lighter augmentation than mmpose's
# RandomBBoxTransform defaults (rotation up to 30 degrees instead of 80, scale 0.75-1.25 instead of 0.5-1.5), for
# 1,000 iterations (docs/depth_keypoints.md, "PCKh@0.1 at 256 x 192"). tools/export.py writes the input size with
# --crop 256; the augmentation comes from
# _base_/kpt_proxy_256x192_light_aug.py.
#   python3 tools/train.py configs/finetune/keypoints_found_ext_256x192_proxy_1200.py
_base_ = ['./keypoints_found_ext_proxy_1200.py', './_base_/kpt_proxy_256x192_light_aug.py']
train_dataloader = dict(dataset=dict(pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(dataset=dict(pipeline={{_base_.val_pipeline}}))
test_dataloader = val_dataloader
model = dict(head=dict(heatmap_size={{_base_.heatmap_size}}, decoder={{_base_.codec}}))
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=1000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=500))
work_dir = 'work_dirs/keypoints_found_ext_256x192_proxy_1200'
