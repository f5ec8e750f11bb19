# Hand-designed baseline: mmpose's HeatmapHead (SimpleBaseline, 256 channels), same backbone, data and budget as
# keypoints_found_proxy.py. Written by
# python tools/export.py --baseline heatmap --task keypoints --out configs/finetune/keypoints_heatmap_proxy.py
# Written by densenas (tools/export.py; in this repository the _base_ entries point at the task's own base
# files instead of copies next to the config): the data, schedule and runtime of those files and
# what this model changes. Train: python3 tools/train.py keypoints_heatmap_proxy.py; test: python3 tools/test.py keypoints_heatmap_proxy.py CHECKPOINT
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
        type='HeatmapHead',
        in_channels=320,
        out_channels=14,
        deconv_out_channels=(256, 256, 256),
        deconv_kernel_sizes=(4, 4, 4),
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
work_dir = 'work_dirs/finetune_kpt_heatmap'
