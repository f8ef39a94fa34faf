#!/usr/bin/env python
r"""Run an RSP model on images or a video and draw its predictions (Detectron2's demo).

    python demo/demo.py --config-file configs/synthetic/rsp4_R18.yaml \
        --input 'datasets/synthetic/cityscapes/leftImg8bit/val/*/*.png' --output out/ \
        --opts MODEL.WEIGHTS output/demo_rsp4_R18/model_final.pth
    python demo/demo.py --config-file CFG --video-input clip.mp4 --output out/ --opts MODEL.WEIGHTS CKPT

Semantic models (SemanticSegmentor + RSPHead) are drawn as Visualizer.draw_sem_seg draws them
(demo/predictor.py's draw_sem_seg, in one pass: 24-megapixel photos fit in memory), panoptic
ones (Panoptic FPN) with draw_panoptic_seg (draw_panoptic_seg_predictions for video). Each
drawing has the size of its input image. Runs on the CPU when there is no CUDA.
"""
import argparse
import os
import time
from typing import Tuple

import cv2
import torch
import tqdm
from PIL import Image

from detectron2.utils.logger import setup_logger

from rsp_d2.config import load_config
from rsp_d2.engine import check_checkpoint, read_image
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.utils.file_io import save_image_atomic

from predictor import SegmentationDemo, expand_inputs, output_paths

_VIDEO_EXTENSIONS = (".mp4", ".avi")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", metavar="FILE",
                   default="configs/synthetic/rsp4_R18.yaml")  # shipped with rsp_d2: found anywhere
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="images: files, glob patterns ('dir/*.png') or folders (searched "
                          "recursively)")
    src.add_argument("--video-input", metavar="VIDEO", help="a video file")
    p.add_argument("--output", required=True, metavar="PATH",
                   help="a folder, or an image (video: .mp4) file for a single input; there is "
                        "no window to show results in (headless OpenCV)")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of instances (Panoptic FPN); semantic models ignore it")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def setup_cfg(args):
    cfg = load_config(args.config_file, args.opts, freeze=False, cpu_if_no_cuda=True)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = args.confidence_threshold
    cfg.freeze()
    check_checkpoint(cfg.MODEL.WEIGHTS)
    return cfg


def run_images(demo, inputs, targets, logger):
    for (path, _), target in tqdm.tqdm(list(zip(inputs, targets)), desc="images", unit="img"):
        image = read_image(path, format="BGR")
        start = time.perf_counter()
        predictions, vis = demo.run_on_image(image)
        what = (f"{len(predictions['panoptic_seg'][1])} segments" if "panoptic_seg" in predictions
                else f"{_count_classes(predictions['sem_seg_labels'])} classes")
        logger.info(f"{path}: {what} in {time.perf_counter() - start:.2f}s -> {target}")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        save_image_atomic(target, Image.fromarray(vis.get_image()))


def _count_classes(labels) -> int:
    # bincount, not unique: unique sorts a copy of the labels (hundreds of MB at 24 megapixels)
    return int(torch.bincount(labels.flatten()).count_nonzero())


def open_video(path) -> Tuple[cv2.VideoCapture, Tuple[int, int]]:
    """The capture of `path`, positioned at its first frame, and its frame size (width, height),
    or InputError saying why `path` is not a video."""
    if not os.path.isfile(path):
        raise InputError(f"--video-input {path}: file not found")
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise InputError(f"cannot read video {path}: OpenCV cannot open it (expected a video "
                         "file, e.g. .mp4)")
    codec = int(video.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1")
    if codec == "ansi":
        video.release()
        # FFmpeg's tty demuxer renders the characters of .txt, .nfo, .asc ... files as frames.
        raise InputError(f"cannot read video {path}: it is a text file, which FFmpeg would only "
                         "render as ANSI art frames (expected a video file, e.g. .mp4)")
    # The container's header can promise frames that cannot be decoded (a truncated file):
    # decode one, and take the frame size from it (the header may say 0 x 0).
    ok, frame = video.read()
    if not ok or frame is None or frame.size == 0:
        width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        video.release()
        raise InputError(f"cannot read video {path}: not a decodable video (OpenCV finds "
                         f"{frames} frames of {width} x {height} pixels but cannot decode the "
                         "first one; is the file complete?)")
    video.release()
    video = cv2.VideoCapture(path)  # from the first frame again (seeking is not exact in all codecs)
    return video, (frame.shape[1], frame.shape[0])


def run_video(demo, video, size, args, logger):
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    width, height = size
    fps = video.get(cv2.CAP_PROP_FPS) or 15.0
    target = args.output
    if os.path.isdir(target) or not target.lower().endswith(_VIDEO_EXTENSIONS):
        stem = os.path.splitext(os.path.basename(args.video_input))[0]
        target = os.path.join(target, stem + ".mp4")
    directory, base = os.path.split(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    # OpenCV picks the container from the extension, so the temporary name keeps it.
    tmp = os.path.join(directory, f".{os.getpid()}.part.{base}")
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), True)
    if not writer.isOpened():
        raise InputError(f"cannot write video {target} (OpenCV has no mp4v encoder here)")
    written = 0
    try:
        for frame in tqdm.tqdm(demo.run_on_video(video), total=frames if frames > 0 else None,
                               desc="frames", unit="frame"):
            writer.write(frame)
            written += 1
        writer.release()
        os.replace(tmp, target)
    finally:
        writer.release()
        video.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info(f"{args.video_input}: {written} frames -> {target}")


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    logger = setup_logger()
    logger.info("Arguments: " + str(args))
    try:
        cfg = setup_cfg(args)
        # Inputs are checked before the model is built.
        if args.video_input:
            video, size = open_video(args.video_input)
            run_video(SegmentationDemo(cfg), video, size, args, logger)
        else:
            inputs = expand_inputs(args.input)
            targets = output_paths(inputs, args.output)
            run_images(SegmentationDemo(cfg), inputs, targets, logger)
    except InputError as e:
        exit_with_error(e)


if __name__ == "__main__":
    main()
