# keypoints_heatmap112_256x192_noaug300_proxy_1200.py (HeatmapHead 112 ch) with the recipe tools/export.py now writes for every
# keypoint head: the head trains alone for 20 iterations (densenas.mm_hooks.HeadFirstHook: the backbone's weights
# and BatchNorm statistics fixed, the head's lr decayed to 0 within those 20), then 300 iterations of the whole
# model from a fresh AdamW state with the backbone's BatchNorm frozen (norm_eval): the one-config form of the
# two-phase probe20 / probe20ft runs. The plain hook of before: --cfg-options custom_hooks.0.decay_lr=False
# custom_hooks.0.restart=backbone (docs/depth_keypoints.md, "Head first, then the whole model").
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_256x192_noaug300_headfirst_proxy_1200.py
_base_ = ['./keypoints_heatmap112_256x192_noaug300_proxy_1200.py']
model = dict(backbone=dict(norm_eval=True))
custom_hooks = [dict(type='HeadFirstHook', iters=20, decay_lr=True, restart='all')]
train_cfg = dict(max_iters=320, val_interval=320)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=320, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=320))
work_dir = 'work_dirs/keypoints_heatmap112_256x192_noaug300_headfirst_proxy_1200'
