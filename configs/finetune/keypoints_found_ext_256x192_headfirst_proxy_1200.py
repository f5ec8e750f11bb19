# keypoints_found_ext_256x192_proxy_1200.py (#2, 1,000 iterations, light augmentation) with the recipe
# tools/export.py now writes for every keypoint head: the head trains alone for the first 20 iterations
# (densenas.mm_hooks.HeadFirstHook: the backbone's weights and BatchNorm statistics fixed, the head's lr decayed
# to 0 within those 20), then the whole model from a fresh AdamW state with the backbone's BatchNorm frozen
# (norm_eval). The plain hook of before: --cfg-options custom_hooks.0.decay_lr=False
# custom_hooks.0.restart=backbone. docs/depth_keypoints.md, "Head first, then the whole model".
#   python3 tools/train.py configs/finetune/keypoints_found_ext_256x192_headfirst_proxy_1200.py
_base_ = ['./keypoints_found_ext_256x192_proxy_1200.py']
model = dict(backbone=dict(norm_eval=True))
custom_hooks = [dict(type='HeadFirstHook', iters=20, decay_lr=True, restart='all')]
work_dir = 'work_dirs/keypoints_found_ext_256x192_headfirst_proxy_1200'
