# Auxiliary-cell decoder search (Nekrasov et al., CVPR 2019) on the bundled proxy set, CPU-sized.
# python tools/search.py configs/search/auxcell_proxy.py
work_dir = "work_dirs/auxcell_proxy"
seed = 0
device = "auto"  # cuda when present

# The task plugin (densenas/tasks/segmentation): data, loss, metrics, reward, export. KD teacher: an ASPP
# head on the encoder, fine-tuned once per search; its logits on the training images are cached.
task = dict(type="segmentation", teacher=dict(iters=200, batch_size=8, lr=2e-3, width=128))

# Proxy set built deterministically from real images shipped in installed packages, VOC layout.
data = dict(layout="proxy", root="data/proxy_voc", image_size=128,
            proxy=dict(num_train=64, num_val=24, size=128, num_classes=5, seed=0))

backbone = dict(type="mobilenet_v2", pretrained=True)  # real ImageNet weights, offline

space = dict(type="auxcell", width=48, num_cells=3, blocks_per_cell=2)

# Surrogate-guided search (densenas/strategies/surrogate.py): 5 random candidates, then a GP over the
# decisions proposes the arch of highest expected improvement. Alternatives: dict(type="random"),
# dict(type="evolution"), dict(type="reinforce", lr=3e-3, batch_size=1), dict(type="optuna",
# sampler="TPESampler"); any of them can be warm-started with zero-cost scores of untrained candidates:
# warm_start=dict(proxy="naswot" | "params" | "synflow" | "zen", pool=64, take=4).
strategy = dict(type="surrogate")

# The proxy trainer (densenas/evaluation/proxy.py). Stage 1: frozen cached encoder, KD + Polyak; stage 2
# only when stage 1 beats the running mean.
evaluator = dict(
    type="proxy",
    stage1=dict(iters=80, batch_size=8, lr=3e-3),
    stage2=dict(iters=20, batch_size=8, lr=1e-3, encoder_lr_mult=0.1),
    early_stop=True, aux_weight=0.4, kd_weight=0.5, polyak=0.98)

# The time budget (search loop and promotion, teacher excluded) keeps the whole run near 15 minutes on any
# machine. Promotion (densenas/promotion.py): once the 40 are done, the best 4 are trained again at twice the
# iterations with 2 seeds each, and best_arch.json is the cheapest of those tied with the best within the
# seed noise; search.promote=None turns it off (the pick is then the best single short run).
search = dict(num_candidates=40, time_budget_s=780,
              promote=dict(rungs=1, top=4, scale=2, seeds=2))
