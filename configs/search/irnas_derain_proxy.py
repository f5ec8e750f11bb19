# IR-NAS for deraining: the same space and search as irnas_denoise_proxy.py, on Rain100-style pairs
# (synthetic streaks over crops of real photographs shipped in packages, written to data/proxy_restore/derain).
# Real Rain100L/H: data = dict(layout="rain100", root="data/Rain100L", train_split="train", val_split="test")
# python tools/search.py configs/search/irnas_derain_proxy.py
work_dir = "work_dirs/irnas_derain_proxy"
seed = 0
device = "auto"
task = dict(type="restoration", kind="derain", lam=0.1, reward_metric="psnr")
data = dict(layout="proxy", root="data/proxy_restore", image_size=32,
            proxy=dict(num_train=48, num_val=12, size=96, seed=0))
space = dict(type="irnas", width=4, layers=3, blocks=2)
strategy = dict(type="darts", w_lr=0.025, arch_lr=3e-3, batch_size=8, warmup_epochs=3, grad_clip=5.0)
# one supernet trained epoch by epoch (densenas/evaluation/supernet.py); DARTS hyper-parameters above
evaluator = dict(type="supernet")
search = dict(epochs=12, time_budget_s=1080)
