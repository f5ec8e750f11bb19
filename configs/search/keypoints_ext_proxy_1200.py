# The keypoint search meant for long schedules (docs/depth_keypoints.md, "A larger set and the full
# schedule"): keypoints_proxy.py's cheap rung (80 + 20 iterations) ranks decoders that learn fast, and its
# pick (#37) led mmpose's HeatmapHead at 300 iterations but trailed it after 2,000. So this search
#   * runs on the 20x larger proxy set the full schedule trains on (1,200 train / 60 val images),
#   * searches keypoints_ext_proxy.py's extended aux-cell space, which holds HeatmapHead (SimpleBaseline,
#     Xiao et al., ECCV 2018) as the arch "heatmap", proposed first and carried to every rung,
#   * trains without auxiliary heads (evaluator.aux_weight=0: with 0.4 they swamp the heatmap point's loss,
#     PCKh@0.5 0.004 against 0.296, see keypoints_ext_proxy.py),
#   * promotes the best 4 and the baseline to a rung 8x longer (640 + 160 iterations), 2 seeds each, and
#     picks there: the cheapest of the tied (the seeds' noise), so it returns HeatmapHead itself unless
#     something beats it at that budget.
# Build the set first (13 s), then search:
#   python3 -c "from densenas.datasets.kpt_proxy import build_proxy_kpt; build_proxy_kpt('data/proxy_kpt_1200', num_train=1200, num_val=60)"
#   python3 tools/search.py configs/search/keypoints_ext_proxy_1200.py --workers 2
_base_ = ["./keypoints_ext_proxy.py"]
work_dir = "work_dirs/keypoints_ext_proxy_1200"
data = dict(root="data/proxy_kpt_1200", proxy=dict(num_train=1200, num_val=60))
evaluator = dict(aux_weight=0.0)
search = dict(num_candidates=24, time_budget_s=None, baselines=["heatmap"],
              promote=dict(rungs=1, top=4, scale=8, seeds=2))
