# Table III "RSP-4-D head": Panoptic FPN on P2-P7 with the RSP-4 head, kernel 3 dilation 3
# (configs/coco/panoptic_rsp4.yaml). The RPN keeps reading p2-p6 (p6 now the strided conv's, as in
# the yaml config) and the ROI heads p2-p5.
from ..common.models.rsp4_p2p7 import to_rsp4
from .panoptic_rsp2 import dataloader, lr_multiplier, model, optimizer, train

to_rsp4(model)
