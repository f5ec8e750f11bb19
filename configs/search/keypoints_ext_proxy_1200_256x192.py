# keypoints_ext_proxy_1200.py at the crop size the user trains at, 256 x 192 (mmpose's COCO top-down size),
# instead of the 128 x 96 it searches by default. Measured: the head that search found at 128 x 96 beat
# HeatmapHead there but trailed it when both were fine-tuned at 256 x 192 (docs/depth_keypoints.md,
# "PCKh@0.1 at 256 x 192"), so a search should score candidates at the size it will be fine-tuned at.
# A step here costs about 2.9x one at 128 x 96, so this search takes fewer candidates and a shorter top rung
# (4x instead of 8x, the best 3 and HeatmapHead, 2 seeds each). Measured on 2 cores, 2 workers of 1 thread:
# the 16 candidates in 24.6 min (the first minutes beside a test run), a top-rung run of the pick 874-879 s,
# so about 1.5 hours in all. With 2 workers its 3.6 GB evaluator fits 24 GiB only because Ray workers share
# its tensors (densenas/ray_share.py); each worker also needs about 2.5 GB for its own training.
#   python3 tools/search.py configs/search/keypoints_ext_proxy_1200_256x192.py --workers 2
_base_ = ["./keypoints_ext_proxy_1200.py"]
work_dir = "work_dirs/keypoints_ext_proxy_1200_256x192"
data = dict(input_size=(256, 192))
search = dict(num_candidates=16, promote=dict(rungs=1, top=3, scale=4, seeds=2))
