"""tools/prepare_panoptic_fpn.py and rsp_d2.data.coco_panoptic_stuff on small crafted annotations."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from support.tools import call_main, run_script

from rsp_d2.data.coco_panoptic_stuff import (
    convert_coco_root,
    convert_panoptic_json,
    panoptic_to_semantic,
    semantic_id_map,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "prepare_panoptic_fpn.py")

# Segment ids chosen to exercise all three RGB bytes of panopticapi's encoding.
PERSON, CAR, ROAD, SKY = (1, 3, 149, 187)  # COCO category ids
SEGMENTS = [
    {"id": 5, "category_id": PERSON},
    {"id": 300, "category_id": CAR},
    {"id": 70000, "category_id": ROAD},
    {"id": 1234567, "category_id": SKY},
]
ID_PLAN = np.array(
    [
        [1234567, 1234567, 1234567, 0],
        [5, 5, 300, 0],
        [70000, 70000, 70000, 70000],
    ],
    dtype=np.int64,
)
# road, sky-other-merged: 21st and 40th stuff entries of COCO_CATEGORIES; things 0, void 255.
EXPECTED = np.array([[40, 40, 40, 255], [0, 0, 0, 255], [21, 21, 21, 21]], dtype=np.uint8)


def _id2rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _write_panoptic(coco_root, split, segments=SEGMENTS, plan=ID_PLAN, n_images=2):
    """A tiny COCO panoptic split: annotations/panoptic_<split>.json + panoptic_<split>/*.png."""
    png_dir = os.path.join(coco_root, f"panoptic_{split}")
    os.makedirs(png_dir, exist_ok=True)
    os.makedirs(os.path.join(coco_root, "annotations"), exist_ok=True)
    anns = []
    for i in range(n_images):
        name = f"{i + 1:012d}.png"
        Image.fromarray(_id2rgb(plan)).save(os.path.join(png_dir, name))
        anns.append({"image_id": i + 1, "file_name": name, "segments_info": segments})
    path = os.path.join(coco_root, "annotations", f"panoptic_{split}.json")
    with open(path, "w") as f:
        json.dump({"annotations": anns, "images": [], "categories": []}, f)
    return path, png_dir


def _run_tool(*args, env=None):
    return run_script(TOOL, *args, env=env)


def test_id_map_matches_detectron2_metadata():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata

    id_map = semantic_id_map()
    meta = _get_builtin_metadata("coco_panoptic_separated")
    assert {k: v for k, v in id_map.items() if v} == {
        k: v for k, v in meta["stuff_dataset_id_to_contiguous_id"].items() if k
    }
    assert sorted(v for v in id_map.values() if v) == list(range(1, 54))
    assert [k for k, v in id_map.items() if v == 0] == [c["id"] for c in COCO_CATEGORIES[:80]]
    assert id_map[ROAD] == 21 and id_map[SKY] == 40


def test_crafted_example(tmp_path):
    pan_json, png_dir = _write_panoptic(tmp_path, "val2017")
    out = tmp_path / "panoptic_stuff_val2017"
    assert convert_panoptic_json(pan_json, png_dir, out) == 2
    assert sorted(os.listdir(out)) == ["000000000001.png", "000000000002.png"]
    for name in os.listdir(out):
        im = Image.open(out / name)
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), EXPECTED)


def test_same_as_detectron2_reference_loop(tmp_path):
    """Against the per-segment loop of Detectron2's datasets/prepare_panoptic_fpn.py."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    rng = np.random.default_rng(0)
    cats = [c["id"] for c in COCO_CATEGORIES]
    segments = [{"id": 1000 + 7919 * k, "category_id": int(rng.choice(cats))} for k in range(30)]
    plan = rng.choice([0] + [s["id"] for s in segments], size=(40, 50))
    reference_map = {c["id"]: 0 for c in COCO_CATEGORIES if c["isthing"]}
    reference_map.update(
        {c["id"]: i + 1 for i, c in enumerate(c for c in COCO_CATEGORIES if not c["isthing"])}
    )
    reference = np.full(plan.shape, 255, np.uint8)
    for seg in segments:
        reference[plan == seg["id"]] = reference_map[seg["category_id"]]
    got = panoptic_to_semantic(_id2rgb(plan), segments, semantic_id_map())
    np.testing.assert_array_equal(got, reference)


def test_cli_single_json_with_workers(tmp_path):
    pan_json, png_dir = _write_panoptic(tmp_path, "val2017", n_images=3)
    out = tmp_path / "sem"
    proc = _run_tool("--panoptic-json", pan_json, "--panoptic-root", png_dir,
                     "--output-dir", str(out), "--workers", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(os.listdir(out)) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000000000003.png")), EXPECTED)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files left


def test_cli_coco_root_uses_detectron2_datasets(tmp_path):
    coco = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        _write_panoptic(coco, split)
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    proc = _run_tool("--coco-root", env=env)
    assert proc.returncode == 0, proc.stderr
    for split in ("train2017", "val2017"):
        assert len(os.listdir(coco / f"panoptic_stuff_{split}")) == 2
    assert convert_coco_root(str(coco), ["val2017"]) == {"val2017": 2}


def test_missing_json_is_a_clear_error(tmp_path):
    missing = tmp_path / "annotations" / "panoptic_val2017.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        convert_panoptic_json(missing, tmp_path, tmp_path / "out")
    proc = call_main("tools/prepare_panoptic_fpn.py", "--coco-root", tmp_path, "--splits", "val2017")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_png_is_a_clear_error(tmp_path):
    pan_json, png_dir = _write_panoptic(tmp_path, "val2017")
    os.remove(os.path.join(png_dir, "000000000002.png"))
    with pytest.raises(FileNotFoundError, match="000000000002.png"):
        convert_panoptic_json(pan_json, png_dir, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="panoptic PNG folder"):
        convert_panoptic_json(pan_json, tmp_path / "nowhere", tmp_path / "out")


def test_unknown_category_is_a_clear_error(tmp_path):
    segments = SEGMENTS[:3] + [{"id": 1234567, "category_id": 12}]  # 12: no COCO category
    pan_json, png_dir = _write_panoptic(tmp_path, "val2017", segments=segments)
    with pytest.raises(ValueError, match=r"000000000001\.png.*category_id 12"):
        convert_panoptic_json(pan_json, png_dir, tmp_path / "out")


def test_unlisted_segment_is_a_clear_error(tmp_path):
    pan_json, png_dir = _write_panoptic(tmp_path, "val2017", segments=SEGMENTS[1:])
    with pytest.raises(ValueError, match=r"segment ids \[5\] are in the PNG"):
        convert_panoptic_json(pan_json, png_dir, tmp_path / "out")


def test_malformed_json_is_a_clear_error(tmp_path):
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps({"annotations": [{"file_name": "a.png"}]}))
    with pytest.raises(ValueError, match=r"annotations\[0\] has no 'segments_info'"):
        convert_panoptic_json(path, tmp_path, tmp_path / "out")


def test_cli_rejects_mixed_modes(tmp_path):
    proc = call_main("tools/prepare_panoptic_fpn.py", "--coco-root", tmp_path, "--output-dir", tmp_path)
    assert proc.returncode == 2 and "either --coco-root" in proc.stderr
