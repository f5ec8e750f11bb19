# keypoints_heatmap112_256x192_proxy_1200.py (HeatmapHead 112 ch) trained like the search's proxy trainer does,
# to compare the two trainers on one head (docs/depth_keypoints.md, "The proxy trains the fused heads better
# than the exported recipe"): no augmentation (the proxy's crops are fixed), 300 iterations, val at the end.
# Variants measured with it: the backbone's BatchNorm frozen as in the proxy's end-to-end stage
# (--cfg-options model.backbone.norm_eval=True) and mmpose's warm-up (the _warmup config).
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_256x192_noaug300_proxy_1200.py [--cfg-options model.backbone.norm_eval=True]
_base_ = ['./keypoints_heatmap112_256x192_proxy_1200.py']
train_dataloader = dict(dataset=dict(pipeline={{_base_.noaug_train_pipeline}}))
train_cfg = dict(max_iters=300, val_interval=300)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=300, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=300))
work_dir = 'work_dirs/keypoints_heatmap112_256x192_noaug300_proxy_1200'
