# IR-NAS (Zhang et al., "Memory-Efficient Hierarchical NAS for Image Restoration"): cell (alpha) and
# per-layer widths W/2W/4W (beta, Viterbi-decoded) searched by first-order DARTS for Gaussian denoising
# (sigma 25 on the 0..255 scale) on crops of real photographs shipped in installed packages, CPU-sized.
# python tools/search.py configs/search/irnas_denoise_proxy.py
work_dir = "work_dirs/irnas_denoise_proxy"
seed = 0
device = "auto"
task = dict(type="restoration", kind="denoise", sigma=25, lam=0.1, reward_metric="psnr")
data = dict(layout="proxy", root="data/proxy_restore", image_size=32,
            proxy=dict(num_train=48, num_val=12, size=96, seed=0))
# CPU-sized: the modulated deformable conv's CPU backward dominates a step (measured ~85% of it).
space = dict(type="irnas", width=4, layers=3, blocks=2)
strategy = dict(type="darts", w_lr=0.025, arch_lr=3e-3, batch_size=8, warmup_epochs=3, grad_clip=5.0)
# one supernet trained epoch by epoch (densenas/evaluation/supernet.py); DARTS hyper-parameters above
evaluator = dict(type="supernet")
search = dict(epochs=12, time_budget_s=1080)
