# NAS-FCOS (Wang et al., CVPR 2020), stage 2 of the progressive search, on the hand-designed FPN: the head
# (an op per layer, how many layers are shared across levels) with mmdet's FPN fixed (fixed_fpn="plain"),
# so the space holds the FPN + FCOS head baseline (baseline_archs()["fpn_fcos"]: mmdet's FCOSHead, exact
# parameters), which is proposed first and carried through every rung: the search can only return it or
# something that beat it at the top rung. Stage 1 (nasfcos_fpn_with_fpn_proxy.py) tied the plain FPN on this
# data, so the head is where the paper's remaining gain would come from (its head search: +0.6 to +1.0 AP).
# Reward: proxy AP (the stage-1 negative loss picked against AP on the real boxes of issue #24).
# Top rung: the best 2 and the baseline exported, fine-tuned by tools/train.py (600 iterations) and tested.
# python tools/search.py configs/search/nasfcos_head_with_fpn_proxy.py
_base_ = ["./nasfcos_fpn_with_fpn_proxy.py"]
work_dir = "work_dirs/nasfcos_head_with_fpn_proxy"
task = dict(type="detection", reward="ap")
space = dict(type="nasfcos", part="head", width=32, variant="with_fpn", fixed_fpn="plain")
search = dict(num_candidates=24, time_budget_s=None, baselines=True,
              promote=dict(rungs=1, top=4, scale=2, seeds=2, final_iters=600, final_top=2,
                           final_args=["--data-root", "data/proxy_coco_big"]))
