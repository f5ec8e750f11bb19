# Auto-DeepLab (Liu et al., CVPR 2019): cell (alpha) + network-level path (beta) searched jointly by
# first-order DARTS on the bundled proxy segmentation set, CPU-sized. The path is decoded by Viterbi.
# python tools/search.py configs/search/autodeeplab_proxy.py
work_dir = "work_dirs/autodeeplab_proxy"
seed = 0
device = "auto"
task = dict(type="segmentation")
data = dict(layout="proxy", root="data/proxy_voc", image_size=64,
            proxy=dict(num_train=64, num_val=24, size=128, num_classes=5, seed=0))
space = dict(type="autodeeplab", layers=5, blocks=3, filter_multiplier=8, aspp_channels=32)
# Auto-DeepLab trains weights only for the first epochs, then alternates weight / architecture steps
# on two disjoint halves of the training set.
strategy = dict(type="darts", w_lr=0.025, arch_lr=3e-3, batch_size=8, steps_per_epoch=12, warmup_epochs=5,
                grad_clip=5.0)
# one supernet trained epoch by epoch (densenas/evaluation/supernet.py); DARTS hyper-parameters above
evaluator = dict(type="supernet")
search = dict(epochs=20, time_budget_s=1080)
