# The decoder found by configs/search/auxcell_lite0_proxy.py (candidate #19, reward 0.826) on the pretrained
# EfficientNet-Lite0, as tools/export.py wrote it (--iters 600); docs/measurements.md: 81.94 mIoU on the proxy val set.
# Written by python tools/export.py best_arch.json --iters 600 --data-root data/proxy_voc --work-dir work_dirs/ft_found_lite0 --out configs/finetune/found_lite0_proxy.py
# (best_arch.json next to the search's config.py; the absolute data root it writes made relative, as in the
# other shipped configs).
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py found_lite0_proxy.py; test: python3 tools/test.py found_lite0_proxy.py CHECKPOINT
_base_ = [
    '../../tasks/segmentation/configs/_base_/datasets/seg_proxy.py',
    '../../tasks/segmentation/configs/_base_/schedules/seg_adamw_poly_2k.py',
    '../../tasks/segmentation/configs/_base_/seg_runtime.py',
]
densenas_task = 'segmentation'
custom_imports = dict(imports=['densenas.tasks.segmentation.mm'], allow_failed_imports=False)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=None,
        size_divisor=32,
    ),
    backbone=dict(type='DenseNASBackbone', backbone=dict(type='efficientnet_lite0', pretrained=True)),
    decode_head=dict(
        type='AuxCellHead',
        arch=dict(
            format=1,
            space='auxcell',
            choices={
                'cell0.in0': 0,
                'cell0.in1': 0,
                'cell1.in0': 0,
                'cell1.in1': 0,
                'cell2.in0': 2,
                'cell2.in1': 3,
                'tmpl.b0.in0': 1,
                'tmpl.b0.in1': 0,
                'tmpl.b0.merge': 'concat',
                'tmpl.b0.op0': 'skip',
                'tmpl.b0.op1': 'conv1x1',
                'tmpl.b1.in0': 0,
                'tmpl.b1.in1': 2,
                'tmpl.b1.merge': 'concat',
                'tmpl.b1.op0': 'conv1x1',
                'tmpl.b1.op1': 'conv3x3',
            },
        ),
        in_channels=[24, 40, 112, 320],
        in_index=[0, 1, 2, 3],
        channels=48,
        aux=True,
        aux_weight=0.4,
        num_classes=6,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=600, by_epoch=False)]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(logger=dict(interval=30), checkpoint=dict(interval=600))
work_dir = 'work_dirs/ft_found_lite0'
