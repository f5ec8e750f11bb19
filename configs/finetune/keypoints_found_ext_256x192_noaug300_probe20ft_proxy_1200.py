# Phase 2 of the head-first run: keypoints_found_ext_256x192_noaug300_proxy_1200.py with the backbone's
# BatchNorm frozen, started from phase 1's checkpoint (the head trained alone for 20 iterations).
#   python3 tools/train.py configs/finetune/keypoints_found_ext_256x192_noaug300_probe20ft_proxy_1200.py
_base_ = ['./keypoints_found_ext_256x192_noaug300_proxy_1200.py']
model = dict(backbone=dict(norm_eval=True))
load_from = 'work_dirs/keypoints_found_ext_256x192_noaug300_probe20_proxy_1200/iter_20.pth'
work_dir = 'work_dirs/keypoints_found_ext_256x192_noaug300_probe20ft_proxy_1200'
