# mmpose's HeatmapHead at 112 deconvolution channels (keypoints_heatmap112_proxy_1200.py: 2.789 M parameters, the
# found head's +0.7 %) on the input size, augmentation and schedule of keypoints_found_ext_256x192_proxy_1200.py
# (docs/depth_keypoints.md, "PCKh@0.1 at 256 x 192").
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_256x192_proxy_1200.py
_base_ = ['./keypoints_heatmap112_proxy_1200.py', './_base_/kpt_proxy_256x192_light_aug.py']
train_dataloader = dict(dataset=dict(pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(dataset=dict(pipeline={{_base_.val_pipeline}}))
test_dataloader = val_dataloader
model = dict(head=dict(decoder={{_base_.codec}}))  # its three deconvolutions land on 64 x 48
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=1000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=500))
work_dir = 'work_dirs/keypoints_heatmap112_256x192_proxy_1200'
