# The 256 x 192 input (mmpose's COCO size; heatmaps 64 x 48, UDP) and the lighter augmentation of the keypoint
# fine-tunes in docs/depth_keypoints.md, "PCKh@0.1 at 256 x 192": rotation up to 30 degrees instead of
# RandomBBoxTransform's 80, scale 0.75-1.25 instead of 0.5-1.5. Variables only: a config takes them with
# {{_base_.train_pipeline}} etc. next to its own base.
input_size = (192, 256)  # (w, h), mmpose's order
heatmap_size = (48, 64)
codec = dict(type='UDPHeatmap', input_size=input_size, heatmap_size=heatmap_size, sigma=2.0,
             heatmap_type='gaussian', blur_kernel_size=11)
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', rotate_factor=30.0, scale_factor=(0.75, 1.25)),
    dict(type='TopdownAffine', input_size=input_size, use_udp=True),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
# the same crops without augmentation, as the search's proxy trainer sees them (its crops are fixed)
noaug_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size, use_udp=True),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size, use_udp=True),
    dict(type='PackPoseInputs'),
]
