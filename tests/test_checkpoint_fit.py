"""A checkpoint fits a config when the model it builds is the same: the strict check compares
what defines the model (architecture, parameters), not the training or test-time settings, so
that the README's flow (train with train_net.py, then draw with demo/demo.py on its
model_final.pth) works with any inference option."""
import pytest

from rsp_d2.config import load_config
from rsp_d2.engine.checkpoint import model_config_of
from support.tools import assert_ok, assert_png, call_main, IMAGE_SIZE
from support.train_net import SEMANTIC_TINY


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [[], ["--confidence-threshold", "0.05"]])
def test_demo_draws_with_the_checkpoint_train_net_wrote(semantic_run, val_images, tmp_path,
                                                        threshold):
    out = tmp_path / "drawn.png"
    proc = call_main("demo/demo.py", "--config-file", SEMANTIC_TINY, "--input", val_images[0],
                     "--output", out, *threshold, "--opts", "MODEL.WEIGHTS",
                     semantic_run[0] / "model_final.pth")
    assert_ok(proc)
    assert_png(out, (IMAGE_SIZE[1], IMAGE_SIZE[0]))


def test_model_config_holds_what_defines_the_model():
    saved = model_config_of(load_config(SEMANTIC_TINY))
    # test-time thresholds, the panoptic combination, training losses and sampling: not kept
    for key in ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST",
                "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
                "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
                "MODEL.SEM_SEG_HEAD.RSP.LOSS_TYPE", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
                "MODEL.SEM_SEG_HEAD.RSP.IMPL", "MODEL.WEIGHTS", "MODEL.DEVICE"]:
        assert key not in saved, key
    # the architecture and what its parameters mean: kept
    for key in ["MODEL.SEM_SEG_HEAD.RSP.FUSION", "MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE",
                "MODEL.SEM_SEG_HEAD.RSP.DILATION", "MODEL.SEM_SEG_HEAD.CONVS_DIM",
                "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NORM", "MODEL.PIXEL_MEAN",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.FPN.OUT_CHANNELS"]:
        assert key in saved, key
