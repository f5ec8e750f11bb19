# The decoder found by the default search (work_dirs/auxcell_proxy/best_arch.json, candidate #8,
# reward 0.785), fine-tuned on the proxy set. Regenerate from your own search with tools/export.py.
_base_ = ["./_base_/proxy_mobilenetv2.py"]
work_dir = "work_dirs/ft_found"
model = dict(decode_head=dict(
    type="AuxCellHead", in_channels=[24, 32, 96, 320], in_index=[0, 1, 2, 3], channels=48,
    num_classes=6, aux=True, aux_weight=0.4, norm_cfg={{_base_.norm_cfg}}, align_corners=False,
    loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    arch=dict(format=1, space="auxcell", choices={
        "cell0.in0": 2, "cell0.in1": 3, "cell1.in0": 1, "cell1.in1": 0, "cell2.in0": 3,
        "cell2.in1": 1,
        "tmpl.b0.in0": 0, "tmpl.b0.in1": 0, "tmpl.b0.op0": "conv1x1", "tmpl.b0.op1": "gap",
        "tmpl.b0.merge": "sum",
        "tmpl.b1.in0": 1, "tmpl.b1.in1": 2, "tmpl.b1.op0": "conv3x3", "tmpl.b1.op1": "conv1x1",
        "tmpl.b1.merge": "sum"})))
