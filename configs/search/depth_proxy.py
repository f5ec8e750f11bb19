# Auxiliary-cell decoder search (Nekrasov et al., CVPR 2019) directly on monocular depth, on the bundled
# proxy depth set (real photographs, exact per-pixel depth, NYU layout), CPU-sized.
# python tools/search.py configs/search/depth_proxy.py
work_dir = "work_dirs/depth_proxy"
seed = 0
device = "auto"  # cuda when present

# The task plugin (densenas/tasks/depth): depth = max_depth * sigmoid(decoder output, 1 channel), mmseg's
# SiLogLoss (loss="berhu" | "l1" as options), mmseg DepthMetric figures, reward sqrt(d1 / (1 + rmse[m])).
# No distillation teacher.
task = dict(type="depth", max_depth=10.0, loss="silog")

# Proxy depth set built deterministically from real images shipped in installed packages, NYU layout
# (images/{train,test}/*.jpg, annotations/{train,test}/*.png uint16 millimetres).
data = dict(layout="proxy", root="data/proxy_nyu", image_size=(96, 128),
            proxy=dict(num_train=64, num_test=24, height=96, width=128, seed=0))

backbone = dict(type="mobilenet_v2", pretrained=True)  # real ImageNet weights, offline

space = dict(type="auxcell", width=48, num_cells=3, blocks_per_cell=2)

# Surrogate-guided search (densenas/strategies/surrogate.py): random candidates first, then a GP over the
# decisions proposes the arch of highest expected improvement.
strategy = dict(type="surrogate")

# The proxy trainer (densenas/evaluation/proxy.py). Stage 1: frozen cached encoder + Polyak; stage 2 (end
# to end) only when stage 1 beats the running mean. kd_weight=0: no teacher.
evaluator = dict(
    type="proxy",
    stage1=dict(iters=100, batch_size=8, lr=3e-3),
    stage2=dict(iters=20, batch_size=8, lr=1e-3, encoder_lr_mult=0.1),
    early_stop=True, aux_weight=0.4, kd_weight=0.0, polyak=0.98)

# Sized for >= 20 candidates in <= 20 minutes on 2 idle CPU cores (~15 s per candidate); the time budget
# (search loop only) stops it in time on a slower machine.
search = dict(num_candidates=40, time_budget_s=1080)
