# Shared fine-tuning setup of the shipped proxy configs: pretrained MobileNetV2 (offline ImageNet
# weights), the bundled proxy set (VOC layout, built by tools/search.py), 600 iterations at batch 8,
# AdamW + poly LR with the encoder at 0.1x. Each config in configs/finetune/ only adds its decode head.
# Configs of your own searches come from tools/export.py (self-contained, same settings).
default_scope = "mmseg"
custom_imports = dict(imports=["densenas.tasks.segmentation.mm"], allow_failed_imports=False)
crop = (128, 128)
classes = ["background", "coffee", "cat", "tissue", "galaxy", "grass"]  # the default proxy set
palette = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
norm_cfg = dict(type="BN", requires_grad=True)

model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                           size=None, size_divisor=32),
    # any densenas backbone (densenas/backbones); MobileNetV2 levels: 24, 32, 96, 320 channels
    backbone=dict(type="DenseNASBackbone", backbone=dict(type="mobilenet_v2", pretrained=True)),
    train_cfg=dict(), test_cfg=dict(mode="whole"))

dataset = dict(type="BaseSegDataset", data_root="data/proxy_voc", img_suffix=".jpg",
               seg_map_suffix=".png", metainfo=dict(classes=classes, palette=palette),
               data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"))
train_pipeline = [
    dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=crop, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=crop, keep_ratio=True),
                 dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
train_dataloader = dict(batch_size=8, num_workers=2, persistent_workers=True,
                        sampler=dict(type="InfiniteSampler", shuffle=True),
                        dataset=dict(dataset, ann_file="ImageSets/Segmentation/train.txt",
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=2, persistent_workers=True,
                      sampler=dict(type="DefaultSampler", shuffle=False),
                      dataset=dict(dataset, ann_file="ImageSets/Segmentation/val.txt",
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

iters = 600
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=3e-3, weight_decay=1e-4),
                     paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)}))
param_scheduler = [dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=30, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=iters, max_keep_ckpts=1,
                    save_best="mIoU"),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
randomness = dict(seed=0)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
