"""Panoptic FPN with the RSP head as its semantic branch: RSP-2 (RSP on the two coarsest pairs
of P2-P5, kernel 7) on Detectron2's own R50-FPN Panoptic FPN (configs/common/models/
panoptic_fpn.py), the LazyConfig form of MODEL.SEM_SEG_HEAD.NAME "RSPHead".

RSPHead takes SemSegFPNHead's arguments but ``common_stride`` (it upsamples by the finest input
level's stride), plus the fusion settings (rsp_d2/config.py documents each; the yaml keys
MODEL.SEM_SEG_HEAD.RSP.* are these arguments in capitals).
"""
from detectron2.model_zoo import get_config

from rsp_d2.modeling import RSPHead

model = get_config("common/models/panoptic_fpn.py").model

model.sem_seg_head._target_ = RSPHead
del model.sem_seg_head.common_stride
model.sem_seg_head.update(
    # One fusion per adjacent pair of input levels, top-down: p5p4, p4p3, p3p2.
    fusion=["rsp", "rsp", "sum"],
    kernel_size=7,
    dilation=1,
    reduction=2,
    num_heads=1,
    pos_embedding=True,
    impl="auto",
    loss_type="cross_entropy",
    loss_top_k=1.0,  # read by loss_type="bootstrapped" only (the yaml recipe's value: 0.2)
)
# What MODEL.BACKBONE.FREEZE_AT (default 2) does in the yaml configs: stem and res2 frozen.
# Detectron2 sets it in its top-level configs; here, so that every config using this model
# trains the same parameters as its yaml twin.
model.backbone.bottom_up.freeze_at = 2
