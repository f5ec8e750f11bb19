# mmpose's HeatmapHead (SimpleBaseline) at 112 deconvolution channels: 2.789 M parameters, the found decoder
# of configs/search/keypoints_ext_proxy_1200.py's (keypoints_found_ext_proxy_1200.py, 2.770 M) +0.7 %, on the
# 20x larger proxy keypoint set and schedule of keypoints_heatmap48_proxy_1200.py (docs/depth_keypoints.md,
# "The search on the larger set"). Written by
#   python tools/export.py --baseline heatmap --task keypoints --width 112 --data-root data/proxy_kpt_1200 \
#       --iters 2000 --val-interval 1000 --out ...
# and reduced to what differs from keypoints_heatmap48_proxy_1200.py.
#   python3 tools/train.py configs/finetune/keypoints_heatmap112_proxy_1200.py
_base_ = ['./keypoints_heatmap48_proxy_1200.py']
model = dict(head=dict(deconv_out_channels=(112, 112, 112)))
train_cfg = dict(max_iters=2000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
work_dir = 'work_dirs/keypoints_heatmap112_proxy_1200'
