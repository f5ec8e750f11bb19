# Template-based search of compact segmentation networks under 500K parameters (Nekrasov, Shen, Reid,
# "Template-Based Automatic Search of Compact Semantic Segmentation Architectures", WACV 2020) on the proxy
# set: 2 shared templates, 4 layers (template, repeat, stride each) on the first layers of MobileNetV2.
work_dir = "work_dirs/template_proxy"
seed = 0
device = "auto"  # cuda when present

task = dict(type="segmentation", teacher=dict(iters=120, batch_size=8, lr=2e-3, width=128))

data = dict(layout="proxy", root="data/proxy_voc", image_size=128,
            proxy=dict(num_train=64, num_val=24, size=128, num_classes=5, seed=0))

# features[0..6] of the ImageNet MobileNetV2: 55K pretrained parameters, levels at strides 4 and 8
backbone = dict(type="mobilenet_v2", out_indices=(3, 6), pretrained=True)

space = dict(type="template", num_templates=2, blocks=2, widths=(32, 48, 64, 96))

strategy = dict(type="surrogate")

evaluator = dict(
    type="proxy",
    stage1=dict(iters=60, batch_size=8, lr=3e-3),
    stage2=dict(iters=15, batch_size=8, lr=1e-3, encoder_lr_mult=0.1),
    early_stop=True, aux_weight=0.4, kd_weight=0.5, polyak=0.98)

# a candidate over 500K parameters (encoder included, auxiliary heads excluded) is rejected before training
objective = dict(cost="params", limit=500_000)

search = dict(num_candidates=40, time_budget_s=1140)
