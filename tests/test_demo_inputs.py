"""Unusual inputs of the image reader, the Predictor and demo/demo.py: 16-bit, palette and alpha
images, arrays that are not (H, W, 3) uint8, images so small that P7 would be one pixel, files
that are not videos, and large images (memory of the labels path)."""
import os
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from support.tools import REPO, assert_clear_error, assert_ok, call_main, run_script

from rsp_d2.utils.errors import InputError

sys.path.insert(0, os.path.join(REPO, "demo"))

# The tiny demo model: 32 channels, so its GroupNorms have one channel per group.
TINY = os.path.join(REPO, "tests", "configs", "rsp4_R18_tiny.yaml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(cfg, model in eval mode, checkpoint path) of TINY at its seeded random init."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from rsp_d2.config import load_config

    cfg = load_config(TINY, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    directory = tmp_path_factory.mktemp("tiny_demo_model")
    DetectionCheckpointer(model, save_dir=str(directory)).save("tiny")
    return cfg, model, str(directory / "tiny.pth")


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from rsp_d2.engine import Predictor

    return Predictor(tiny_model[0], model=tiny_model[1])


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- read_image

def test_read_image_scales_16_bits_and_expands_channels(tmp_path):
    from rsp_d2.engine import read_image

    gray16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    rgb16 = np.stack([gray16, gray16[::-1], 65535 - gray16], axis=-1)
    gray8, rgb8 = (gray16 >> 8).astype(np.uint8), (rgb16 >> 8).astype(np.uint8)
    for ext in ("png", "tif"):  # cv2 writes uint16 as 16-bit PNG / TIFF, in BGR order
        cv2.imwrite(str(tmp_path / f"gray16.{ext}"), gray16)
        cv2.imwrite(str(tmp_path / f"rgb16.{ext}"), rgb16[:, :, ::-1])
        # grayscale: scaled, not clipped at 255 (which made it all white)
        assert np.array_equal(read_image(str(tmp_path / f"gray16.{ext}")),
                              np.repeat(gray8[:, :, None], 3, axis=2))
        assert np.array_equal(read_image(str(tmp_path / f"rgb16.{ext}"), format="RGB"), rgb8)
        assert np.array_equal(read_image(str(tmp_path / f"rgb16.{ext}")), rgb8[:, :, ::-1])

    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    assert np.array_equal(read_image(str(tmp_path / "gray8.png")), np.repeat(gray8[:, :, None], 3, 2))
    palette = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 30], [200, 200, 0]], dtype=np.uint8)
    index = (np.arange(48 * 64).reshape(48, 64) % 4).astype(np.uint8)
    paletted = Image.new("P", (64, 48))
    paletted.putpalette(palette.reshape(-1).tolist())
    paletted.putdata(index.reshape(-1).tolist())
    paletted.save(tmp_path / "palette.png")
    assert np.array_equal(read_image(str(tmp_path / "palette.png"), format="RGB"), palette[index])
    alpha = np.full((48, 64, 1), 100, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb8, alpha], axis=2)).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(str(tmp_path / "rgba.png"), format="RGB"), rgb8)  # alpha dropped

    Image.fromarray(gray16.astype(np.float32) / 65535).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match="float.tif: 32-bit float pixels"):
        read_image(str(tmp_path / "float.tif"))


# ------------------------------------------------------------------------ Predictor inputs

_RGB = _image(32, 48)
_RGB[0, 0], _RGB[0, 1] = 0, 255  # the full range, for the messages' "values 0 to ..."


@pytest.mark.parametrize("image, fragments", [
    (_RGB / 255.0, ["float64 array of shape (32, 48, 3)", "values 0 to 1",
                    "(image * 255).round().astype(np.uint8)"]),
    (np.full((32, 48, 3), np.nan, dtype=np.float32), ["float32", "NaN"]),
    (_RGB[:, :, 0], ["shape (32, 48) is grayscale", "cv2.COLOR_GRAY2BGR"]),
    (_RGB[:, :, :1], ["shape (32, 48, 1) is grayscale", "cv2.COLOR_GRAY2BGR"]),
    (np.dstack([_RGB, _RGB[:, :, :1]]), ["shape (32, 48, 4) has 4 channels", "image[:, :, :3]"]),
    (_RGB.astype(np.uint16) * 256, ["uint16", "values 0 to 65280", "(image >> 8)"]),
    (_RGB[:0], ["shape (0, 48, 3) is empty"]),
], ids=["float_0_1", "nan", "hw", "hw1", "hw4", "uint16", "empty"])
def test_predictor_refuses_what_is_not_a_uint8_bgr_image(predictor, image, fragments):
    with pytest.raises(InputError) as e:
        predictor(image)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_predictor_takes_integer_images_of_0_to_255(predictor):
    expected = predictor(_RGB)["sem_seg"]
    torch.testing.assert_close(predictor(_RGB.astype(np.int64))["sem_seg"], expected)


# ---------------------------------------------------------------- small and square inputs

@pytest.mark.parametrize("size", [(1, 1), (300, 300), (2, 2), (1, 1000)])
def test_predictor_small_and_square_images(predictor, size):
    """A square image is resized to one 128 x 128 tile, whose P7 would be 1 x 1 (GroupNorm
    refused it); an extreme aspect ratio was resized to 0 pixels."""
    out = predictor(_image(*size))["sem_seg"]
    assert out.shape == (19, *size) and torch.isfinite(out).all()
    labels = predictor(_image(*size), logits=False)["sem_seg_labels"]
    assert labels.shape == size and (labels == out.argmax(dim=0)).double().mean() > 0.99


def test_one_tile_input_is_padded_like_any_other(tiny_model):
    """The model's answer for a 128 x 128 input is that of its zero-padding to 128 x 256
    (the padding ImageList does), cropped back."""
    _, model, _ = tiny_model
    x = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        out = model([{"image": x}])[0]["sem_seg"]
        padded = F.pad(((x - model.pixel_mean) / model.pixel_std)[None], (0, 128))
        logits, _ = model.sem_seg_head(model.backbone(padded))
    assert out.shape == (19, 128, 128)
    torch.testing.assert_close(out, logits[0, :, :128, :128])


@pytest.mark.slow
def test_demo_draws_small_square_and_thin_images(tiny_model, tmp_path):
    _, _, ckpt = tiny_model
    sizes = {"one": (1, 1), "square": (300, 300), "two_wide": (300, 2), "two_high": (2, 300)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), _image(h, w))
    proc = call_main("demo/demo.py", "--config-file", TINY, "--input", tmp_path,
                     "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_ok(proc)
    for name, (h, w) in sizes.items():
        assert Image.open(tmp_path / "out" / f"{name}.png").size == (w, h)


def test_demo_draws_panoptic_two_pixels_wide():
    """Detectron2's GenericMask asserts on (H, 2) masks; the demo draws one column wider."""
    from predictor import SegmentationDemo

    from rsp_d2.config import load_config

    cfg = load_config(os.path.join(REPO, "configs/coco/panoptic_rsp4.yaml"), cpu_if_no_cuda=True)
    seg = torch.ones(40, 2, dtype=torch.int32)
    info = [{"id": 1, "category_id": 1, "isthing": False, "area": 80}]
    demo = SegmentationDemo(cfg, predictor=lambda image, **kwargs: {"panoptic_seg": (seg, info)})
    image = np.full((40, 2, 3), 127, dtype=np.uint8)
    drawn = demo.run_on_image(image)[1].get_image()
    assert drawn.shape == (40, 2, 3) and np.abs(drawn.astype(int) - 127).mean() > 5


def test_draw_sem_seg_draws_as_detectron2():
    """Each class blended as Visualizer.draw_sem_seg's layers blend it (0.8 colour, 0.2 image;
    ids out of range left alone), names where its _draw_text_in_mask puts them: the per-axis
    median pixel of the largest component and of those above 120000 pixels."""
    from detectron2.data.catalog import Metadata

    from predictor import _text_positions, draw_sem_seg

    labels = np.zeros((90, 120), dtype=np.int64)
    labels[:, 60:], labels[30:61, 20:41], labels[:5, :5] = 1, 2, 255
    colors = np.array([(200, 0, 0), (0, 0, 200), (0, 200, 0)])
    meta = Metadata(name="blend_test", stuff_classes=["", "", ""],  # no text over the pixels
                    stuff_colors=[tuple(c) for c in colors])
    # Uniform regions: matplotlib renders the figure (Detectron2's VisImage) with a slight
    # resampling, which moves the pixels of noise and of borders.
    image = np.empty((90, 120, 3), dtype=np.uint8)
    image[:] = (100, 150, 50)
    drawn = draw_sem_seg(image, torch.as_tensor(labels), meta).output.get_image().astype(int)
    expected = np.where(labels[..., None] < 3, 0.2 * image + 0.8 * colors[labels.clip(0, 2)], image)
    edge = np.pad(labels, 2, mode="edge")
    inside = np.all([edge[2 + dy:92 + dy, 2 + dx:122 + dx] == labels
                     for dy in range(-2, 3) for dx in range(-2, 3)], axis=0)
    assert np.abs(drawn - expected)[inside].max() <= 1

    def named(m):  # Detectron2's choice, its own way
        count, components, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), 8)
        largest = np.argmax(stats[1:, -1]) + 1
        return sorted(tuple(np.median((components == c).nonzero(), axis=1)[::-1])
                      for c in range(1, count) if c == largest or stats[c, -1] > 120000)

    mask = np.zeros((500, 1300), dtype=bool)
    mask[10:410, 10:410] = True  # 160000 pixels: the largest
    mask[50:450, 850:1200] = True  # 140000: named too
    mask[420:480, 480:790] = True  # 18600
    mask[100:400, 430:560] = True
    mask[100:300, 430:520] = False  # an uneven L of 21000: the largest of the middle ones
    assert len(named(mask)) == 2
    middle = mask & (np.arange(1300) > 420) & (np.arange(1300) < 800)
    for m in (mask, middle):
        assert sorted(_text_positions(m)) == named(m)


# ------------------------------------------------------------------------------- videos

@pytest.mark.parametrize("case", ["lost_frames", "text"])
def test_demo_names_why_a_file_is_not_a_video(case, tiny_model, tmp_path):
    _, _, ckpt = tiny_model
    if case == "lost_frames":  # an mp4 whose frame data is lost: OpenCV reads 3 frames of 0 x 0
        path = tmp_path / "clip.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
        for seed in range(3):
            writer.write(_image(48, 64, seed))
        writer.release()
        data = bytearray(path.read_bytes())
        start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
        assert 0 < start < end
        data[start:end] = bytes(end - start)
        path.write_bytes(bytes(data))
        expected = ["not a decodable video", "cannot decode the first one"]
    else:  # FFmpeg renders .txt files as ANSI art "frames"
        path = tmp_path / "notes.txt"
        path.write_text("not a video, just some notes\n" * 50)
        opened = cv2.VideoCapture(str(path)).isOpened()
        expected = ["text file"] if opened else ["OpenCV cannot open it"]
    proc = call_main("demo/demo.py", "--config-file", TINY, "--video-input", path,
                     "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_clear_error(proc, f"cannot read video {path}", *expected)
    assert "mp4v" not in proc.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- large images

def test_upsampled_argmax_is_the_argmax_of_the_upsampled_logits():
    from rsp_d2.engine.predictor import upsampled_argmax

    logits = torch.randn(19, 37, 53, generator=torch.Generator().manual_seed(0))
    for size in [(300, 200), (1111, 1543), (20, 30)]:  # up (strips of rows), down
        ref = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        labels = upsampled_argmax(logits, size)
        assert labels.shape == size and labels.dtype == torch.long
        assert (labels == ref.argmax(dim=0)).double().mean() > 0.9999


_PEAK_SCRIPT = textwrap.dedent("""\
    import sys

    import numpy as np
    import torch
    from detectron2.modeling import build_model

    from rsp_d2.config import load_config
    from rsp_d2.engine import Predictor


    def status(key):  # MiB
        line = [l for l in open("/proc/self/status") if l.startswith(key + ":")][0]
        return int(line.split()[1]) / 1024


    cfg = load_config(sys.argv[1], ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    predictor = Predictor(cfg, model=build_model(cfg).eval())
    image = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    predictor(image[:300, :400], logits=sys.argv[2] == "logits")  # lazy initializations
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the RSS now
    out = predictor(image, logits=sys.argv[2] == "logits")
    print("extra MiB", status("VmHWM") - before)
""")


@pytest.mark.slow
def test_labels_of_a_large_image_take_a_fraction_of_its_logits_memory(tmp_path):
    """Peak memory of one Predictor call on a 6-megapixel image, in a process of its own: the
    (19, 2000, 3000) float32 logits are 435 MiB; the labels path never makes them."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    extra = {}
    for mode in ("labels", "logits"):
        proc = run_script(script, TINY, mode)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        extra[mode] = float(proc.stdout.split("extra MiB")[-1])
    logits_mib = 19 * 2000 * 3000 * 4 / 2 ** 20
    assert extra["logits"] > logits_mib, extra  # the measurement sees the logits
    assert extra["labels"] < logits_mib / 2, extra
