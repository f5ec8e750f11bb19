# A found aux-cell decoder as an mmpose top-down heatmap head (AuxCellHeatmapHead), on the proxy keypoint set. Written by
# python tools/export.py best_arch.json --task keypoints --width 48 --out configs/finetune/keypoints_found_proxy.py
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py keypoints_found_proxy.py; test: python3 tools/test.py keypoints_found_proxy.py CHECKPOINT
_base_ = [
    '../../tasks/keypoints/configs/_base_/datasets/kpt_proxy.py',
    '../../tasks/keypoints/configs/_base_/schedules/kpt_adamw_poly_2k.py',
    '../../tasks/keypoints/configs/_base_/kpt_runtime.py',
]
densenas_task = 'keypoints'
custom_imports = dict(imports=['densenas.tasks.keypoints.mm'], allow_failed_imports=False)
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
    ),
    backbone=dict(type='DenseNASBackbone', backbone=dict(type='mobilenet_v2', pretrained=True)),
    head=dict(
        type='AuxCellHeatmapHead',
        arch=dict(
            format=1,
            space='auxcell',
            choices={
                'cell0.in0': 0,
                'cell0.in1': 2,
                'cell1.in0': 1,
                'cell1.in1': 1,
                'cell2.in0': 3,
                'cell2.in1': 0,
                'tmpl.b0.in0': 0,
                'tmpl.b0.in1': 1,
                'tmpl.b0.merge': 'sum',
                'tmpl.b0.op0': 'conv3x3',
                'tmpl.b0.op1': 'conv1x1',
                'tmpl.b1.in0': 1,
                'tmpl.b1.in1': 1,
                'tmpl.b1.merge': 'concat',
                'tmpl.b1.op0': 'sep_conv_5x5',
                'tmpl.b1.op1': 'conv3x3',
            },
        ),
        in_channels=[24, 32, 96, 320],
        in_strides=[4, 8, 16, 32],
        channels=48,
        aux=True,
        aux_weight=0.4,
        out_channels=14,
        heatmap_size=(24, 32),
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=dict(
            type='UDPHeatmap',
            input_size=(96, 128),
            heatmap_size=(24, 32),
            sigma=2.0,
            heatmap_type='gaussian',
            blur_kernel_size=11,
        ),
    ),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=False),
)
work_dir = 'work_dirs/finetune_kpt_found'
