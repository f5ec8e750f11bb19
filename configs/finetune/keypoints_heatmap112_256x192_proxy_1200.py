# mmpose's HeatmapHead at 112 deconvolution channels (keypoints_heatmap112_proxy_1200.py: 2.789 M parameters, the
# found head's +0.7 %) on the input size, augmentation and schedule of keypoints_found_ext_256x192_proxy_1200.py
# (docs/depth_keypoints.md, "PCKh@0.1 at 256 x 192").
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_256x192_proxy_1200.py
_base_ = ['./keypoints_heatmap112_proxy_1200.py']
input_size = (192, 256)  # (w, h), mmpose's order
heatmap_size = (48, 64)
codec = dict(type='UDPHeatmap', input_size=input_size, heatmap_size=heatmap_size, sigma=2.0,
             heatmap_type='gaussian', blur_kernel_size=11)
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', rotate_factor=30.0, scale_factor=(0.75, 1.25)),
    dict(type='TopdownAffine', input_size=input_size, use_udp=True),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size, use_udp=True),
    dict(type='PackPoseInputs'),
]))
test_dataloader = val_dataloader
model = dict(head=dict(decoder=codec))  # its three deconvolutions land on 64 x 48
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=1000, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=500))
work_dir = 'work_dirs/keypoints_heatmap112_256x192_proxy_1200'
