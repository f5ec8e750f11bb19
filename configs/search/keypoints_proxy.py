# Keypoint decoder search (aux-cell space of Nekrasov et al., CVPR 2019) directly on the proxy keypoint set,
# CPU-sized. python tools/search.py configs/search/keypoints_proxy.py
work_dir = "work_dirs/keypoints_proxy"
seed = 0
device = "auto"  # cuda when present

# The task plugin (densenas/tasks/keypoints): top-down crops + heatmaps of an mmpose codec (stride 4),
# KeypointMSELoss, PCKh / COCO AP metrics, reward = mean of PCKh@0.5 and PCKh@0.1. No distillation teacher.
# flip_test: every val crop is also scored mirrored and the heatmaps averaged, as mmpose's
# test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=...) (the export writes the same).
task = dict(type="keypoints", flip_test=True)

# Proxy set built deterministically from real photographs (articulated real-texture figures, 14 joints,
# some occluded), COCO keypoint layout; person crops of 128x96 (h x w), heatmaps 32x24.
# codec: "udp" (UDP, Huang et al., CVPR 2020: unbiased crops, sub-pixel targets and decoding, an exact flip),
# "dark" (DARK, Zhang et al., CVPR 2020) or "msra" (SimpleBaseline's: targets on the heatmap grid, PCKh@0.1
# capped at 0.370 here; python -m densenas.tasks.keypoints.ceiling). The export uses the same codec.
data = dict(layout="proxy", root="data/proxy_kpt", input_size=(128, 96), sigma=2.0, codec="udp",
            proxy=dict(num_train=64, num_val=24, size=160, seed=0))

backbone = dict(type="mobilenet_v2", pretrained=True)  # real ImageNet weights, offline

space = dict(type="auxcell", width=48, num_cells=3, blocks_per_cell=2)

# Surrogate-guided search (densenas/strategies/surrogate.py), as the segmentation search.
strategy = dict(type="surrogate")

# The two-stage proxy trainer (densenas/evaluation/proxy.py): stage 1 on cached frozen-encoder features with
# aux heads and Polyak averaging; stage 2 end to end only when stage 1 beats the running mean.
evaluator = dict(
    type="proxy",
    stage1=dict(iters=80, batch_size=16, lr=3e-3),
    stage2=dict(iters=20, batch_size=16, lr=1e-3, encoder_lr_mult=0.1),
    early_stop=True, aux_weight=0.4, kd_weight=0.0, polyak=0.98)

# Sized for >= 20 candidates in <= 20 minutes on 2 idle CPU cores; the time budget (search loop only)
# stops it in time on a slower machine.
search = dict(num_candidates=40, time_budget_s=960)
