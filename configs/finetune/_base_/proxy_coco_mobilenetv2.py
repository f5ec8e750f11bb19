# Shared detection fine-tuning setup of the shipped proxy configs (NAS-FCOS, Wang et al. CVPR 2020;
# NAS-FPN, Ghiasi et al. CVPR 2019; and their hand-designed FPN baselines): pretrained MobileNetV2 C3-C5
# (offline ImageNet weights), the bundled proxy COCO-layout set (built by tools/search.py with a
# detection config), 600 iterations at batch 8, AdamW with the backbone at 0.1x, warm-up + cosine,
# COCO AP from mmdet's CocoMetric. Each det_*.py config here only adds its neck and head.
# Configs of your own searches come from tools/export.py (self-contained, same settings).
default_scope = "mmdet"
custom_imports = dict(imports=["densenas.tasks.detection.mm"], allow_failed_imports=False)
data_root = "data/proxy_coco"
classes = ("coffee", "cat", "tissue", "galaxy")  # the default proxy set
crop = (128, 128)
width = 32  # pyramid and head width of the proxy searches
iters = 600

model = dict(
    type="FCOS",
    data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    # any densenas backbone (densenas/backbones); MobileNetV2 C3-C5: 32, 96, 320 channels
    backbone=dict(type="DenseNASBackbone",
                  backbone=dict(type="mobilenet_v2", out_indices=(6, 13, 17), pretrained=True)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                  max_per_img=100))
train_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                  dict(type="Resize", scale=crop, keep_ratio=True), dict(type="RandomFlip", prob=0.5),
                  dict(type="PackDetInputs")]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=crop, keep_ratio=True),
                 dict(type="LoadAnnotations", with_bbox=True),
                 dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                       "scale_factor"))]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True), batch_sampler=dict(type="AspectRatioBatchSampler"),
    dataset=dict(type="CocoDataset", data_root=data_root, ann_file="annotations/instances_train.json",
                 data_prefix=dict(img="train/"), metainfo=dict(classes=classes),
                 filter_cfg=dict(filter_empty_gt=True, min_size=2), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="CocoDataset", data_root=data_root, ann_file="annotations/instances_val.json",
                 data_prefix=dict(img="val/"), metainfo=dict(classes=classes), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="CocoMetric", ann_file=data_root + "/annotations/instances_val.json", metric="bbox",
                     format_only=False)
test_evaluator = val_evaluator

train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=35, norm_type=2),
                     paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))
param_scheduler = [dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=iters // 10),
                   dict(type="CosineAnnealingLR", T_max=iters - iters // 10, eta_min=1e-5, by_epoch=False,
                        begin=iters // 10, end=iters)]

default_hooks = dict(
    timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=30, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=iters, max_keep_ckpts=1,
                    save_best="coco/bbox_mAP", rule="greater"),
    sampler_seed=dict(type="DistSamplerSeedHook"), visualization=dict(type="DetVisualizationHook"))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="DetLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
