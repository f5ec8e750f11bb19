# The default aux-cell decoder search (auxcell_proxy.py) at the scale of Nekrasov et al. (CVPR 2019, "Fast
# Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells"): a VOC-sized
# meta-train set (the authors' code draws 4,000 VOC images and keeps 90 % for training, 10 % for the reward),
# 512x512 inputs, stage 1 = 5 epochs at batch 64, stage 2 = 1 epoch at batch 32 (their NUM_SEGM_EPOCHS = [5, 1],
# BATCH_SIZE = [64, 32]; learning rates 3e-3 decoder / 1e-3 encoder, Polyak averaging, KD). A GPU config: it
# states what one candidate costs at the papers' scale (benchmarks/gpu_check.py --parts paper; NAS-FCOS spent
# about 13 GPU-minutes per candidate, FastDenseNAS about 8 GPU-days for its search on 2 GPUs).
#
# Without a real VOC at hand the set is the proxy set built from the photographs shipped in installed
# packages (datasets/proxy.py: 8 foreground classes is all it has), 3,600 + 400 images at 512 px, built
# on first use. Memory, by arithmetic (not measured yet): the images are held as float32 (3.1 MB each at
# 512 px, 12.6 GB for 4,000) and the MobileNetV2 features of the four levels the space reads (24/32/96/320
# channels at strides 4/8/16/32: 2.8 MB each, 11.3 GB), both once per search in host memory and on the
# training device, plus the teacher's logits: some 25-30 GB that a 40 GB GPU holds and a CPU machine with
# 24 GiB does not. Each Ray worker holds its own copy, so k candidates in flight on one GPU need k times that
# (an H200's 139 GB: 4). With a real VOC-layout set: data=dict(layout="voc", root=...)
# as in docs/data.md (the classes are read from the data).
#
# python tools/search.py configs/search/auxcell_paper_scale.py                # on a GPU
# python tools/search.py configs/search/auxcell_paper_scale.py --workers 2 \
#     --cfg-options parallel.gpus_per_worker=0.5                             # 2 candidates on one GPU
_base_ = ["./auxcell_proxy.py"]
work_dir = "work_dirs/auxcell_paper_scale"

data = dict(layout="proxy", root="data/proxy_voc_paper", image_size=512,
            proxy=dict(num_train=3600, num_val=400, size=512, num_classes=8, seed=0))

# the KD teacher (an ASPP head on the encoder), trained once per search at batch 16
task = dict(type="segmentation", teacher=dict(iters=1000, batch_size=16, lr=2e-3, width=128))

# 5 epochs of 3,600 images at batch 64 = 282 iterations; 1 epoch at batch 32 = 113
evaluator = dict(
    type="proxy",
    stage1=dict(iters=282, batch_size=64, lr=3e-3),
    stage2=dict(iters=113, batch_size=32, lr=1e-3, encoder_lr_mult=1 / 3),
    early_stop=True, aux_weight=0.15, kd_weight=0.3, polyak=0.98, eval_batch_size=64)

# The papers' searches train thousands of candidates; 100 here (a GPU-hour's worth is the goal of
# issue #23), no time budget, the default promotion.
search = dict(num_candidates=100, time_budget_s=None,
              promote=dict(rungs=1, top=4, scale=2, seeds=2))
