# keypoints_heatmap112_256x192_noaug300_proxy_1200.py with the backbone's BatchNorm frozen and mmpose's warm-up
# (its top-down recipes start at 0.001x the lr, LinearLR), here over the first 50 of the 300 iterations.
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_256x192_noaug300_warmup_proxy_1200.py
_base_ = ['./keypoints_heatmap112_256x192_noaug300_proxy_1200.py']
model = dict(backbone=dict(norm_eval=True))
param_scheduler = [dict(type='LinearLR', start_factor=0.001, begin=0, end=50, by_epoch=False),
                   dict(type='PolyLR', eta_min=0.0, power=0.9, begin=50, end=300, by_epoch=False)]
work_dir = 'work_dirs/keypoints_heatmap112_256x192_noaug300_warmup_proxy_1200'
