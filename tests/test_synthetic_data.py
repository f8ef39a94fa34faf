"""The synthetic datasets, validated with the official tools of each format."""

import copy
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image
from support.run_once import run_once
from support.tools import call_main, run_script

from rsp_d2.data.synthetic.publish import MARKER_NAME
from rsp_d2.data.coco_panoptic_stuff import semantic_id_map
from rsp_d2.data.synthetic import (
    CITYSCAPES_IMAGE_SIZE,
    DEFAULT_SIZES,
    cityscapes_train_classes,
    generate_cityscapes,
    generate_coco_panoptic,
    generate_datasets,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CS_TRAIN, N_CS_VAL = DEFAULT_SIZES["cityscapes"]
N_COCO_TRAIN, N_COCO_VAL = DEFAULT_SIZES["coco"]
COCO_SPLITS = {"train2017": N_COCO_TRAIN, "val2017": N_COCO_VAL}


def _png(path):
    return np.asarray(Image.open(path))


def _pan_ids(path):
    rgb = _png(path).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


# ---------------------------------------------------------------- layout


def test_cityscapes_layout(synthetic_root):
    cs = synthetic_root / "cityscapes"
    for split, count in (("train", N_CS_TRAIN), ("val", N_CS_VAL)):
        images = sorted(glob.glob(str(cs / "leftImg8bit" / split / "*" / "*_leftImg8bit.png")))
        assert len(images) == count
        cities = {os.path.basename(os.path.dirname(p)) for p in images}
        assert len(cities) >= 2
        for img in images:
            city = os.path.basename(os.path.dirname(img))
            stem = os.path.basename(img)[: -len("leftImg8bit.png")]
            assert stem.startswith(city + "_") and len(stem.split("_")) == 4  # city_seq_frame_
            im = Image.open(img)
            assert im.mode == "RGB" and im.size == CITYSCAPES_IMAGE_SIZE[::-1]
            gt = cs / "gtFine" / split / city
            for suffix in ("labelIds", "instanceIds", "color", "labelTrainIds"):
                assert (gt / f"{stem}gtFine_{suffix}.png").is_file()
            with open(gt / f"{stem}gtFine_polygons.json") as f:
                poly = json.load(f)
            assert (poly["imgHeight"], poly["imgWidth"]) == CITYSCAPES_IMAGE_SIZE
            assert all({"label", "polygon"} <= set(o) for o in poly["objects"])


def test_cityscapes_label_images_agree(synthetic_root):
    """labelIds, instanceIds, color and labelTrainIds encode one and the same labelling."""
    from cityscapesscripts.helpers.labels import labels

    to_train = np.full(256, 255, np.uint8)
    to_color = np.zeros((256, 3), np.uint8)
    for label in labels:
        if label.id >= 0:
            to_train[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
            to_color[label.id] = label.color
    for path in glob.glob(str(synthetic_root / "cityscapes/gtFine/*/*/*_labelIds.png")):
        ids = _png(path)
        inst = _png(path.replace("labelIds", "instanceIds")).astype(np.int64)
        assert ids.dtype == np.uint8 and ids.shape == CITYSCAPES_IMAGE_SIZE
        np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), ids)
        np.testing.assert_array_equal(
            _png(path.replace("labelIds", "labelTrainIds")), to_train[ids]
        )
        color = _png(path.replace("labelIds", "color"))
        np.testing.assert_array_equal(color[..., :3], to_color[ids])


def test_cityscapes_classes_present(synthetic_root):
    from cityscapesscripts.helpers.labels import id2label

    for split in ("train", "val"):
        present = set()
        for path in glob.glob(str(synthetic_root / f"cityscapes/gtFine/{split}/*/*_labelIds.png")):
            present |= {id2label[int(i)].name for i in np.unique(_png(path))}
        assert set(cityscapes_train_classes()) <= present, split
        assert "ego vehicle" in present  # trainId 255: the ignore label occurs


# ---------------------------------------------------------------- context property


def test_rider_needs_context(synthetic_root):
    """Riders always touch a bicycle/motorcycle, persons never do; both occur."""
    import cv2
    from cityscapesscripts.helpers.labels import name2label

    person, rider = name2label["person"].id, name2label["rider"].id
    two_wheelers = [name2label["bicycle"].id, name2label["motorcycle"].id]
    kernel = np.ones((3, 3), np.uint8)  # 8-neighbourhood: "touches"
    counts = {"person": 0, "rider": 0}
    for path in glob.glob(str(synthetic_root / "cityscapes/gtFine/*/*/*_instanceIds.png")):
        inst = _png(path).astype(np.int64)
        wheels = np.isin(inst // 1000, two_wheelers) & (inst >= 1000)
        for iid in np.unique(inst[inst >= 1000]):
            cls = iid // 1000
            if cls not in (person, rider):
                continue
            grown = cv2.dilate((inst == iid).astype(np.uint8), kernel).astype(bool)
            touches = bool((grown & wheels).any())
            name = "rider" if cls == rider else "person"
            assert touches == (name == "rider"), f"{name} {iid} in {path}"
            counts[name] += 1
    assert counts["person"] >= N_CS_TRAIN and counts["rider"] >= N_CS_TRAIN


# ---------------------------------------------------------------- official Cityscapes evaluation


def test_cityscapes_official_eval_of_gt_is_perfect(synthetic_root, tmp_path):
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

    gts = sorted(glob.glob(str(synthetic_root / "cityscapes/gtFine/val/*/*_gtFine_labelIds.png")))
    assert len(gts) == N_CS_VAL
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for gt in gts:  # predictions are the ground truth itself, as labelIds PNGs
        shutil.copy(gt, pred_dir / os.path.basename(gt).replace("_gtFine_labelIds", "_pred"))
    args = copy.copy(cs_eval.args)  # the module's args object is global: work on a copy
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    args.JSONOutput, args.quiet, args.colorized = False, True, False
    preds = [cs_eval.getPrediction(args, gt) for gt in gts]
    results = cs_eval.evaluateImgLists(preds, gts, args)

    assert results["averageScoreClasses"] == pytest.approx(1.0)
    assert results["averageScoreInstClasses"] == pytest.approx(1.0)
    scored = {k: v for k, v in results["classScores"].items() if not np.isnan(v)}
    assert set(cityscapes_train_classes()) <= set(scored)
    assert all(v == pytest.approx(1.0) for v in scored.values())


# ---------------------------------------------------------------- COCO formats


def test_coco_layout(synthetic_root):
    coco = synthetic_root / "coco"
    for split, count in COCO_SPLITS.items():
        jpgs = sorted(os.listdir(coco / split))
        assert len(jpgs) == count and all(f.endswith(".jpg") for f in jpgs)
        stems = [f[:-4] for f in jpgs]
        for folder in (f"panoptic_{split}", f"panoptic_stuff_{split}"):
            assert sorted(os.listdir(coco / folder)) == [s + ".png" for s in stems]
        sizes = {Image.open(coco / split / f).size for f in jpgs}
        assert len(sizes) > 1  # sizes vary like COCO's
        assert all(380 <= w <= 480 and 280 <= h <= 360 for w, h in sizes)


def test_coco_categories_are_real(synthetic_root):
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    with open(synthetic_root / "coco/annotations/instances_val2017.json") as f:
        inst = json.load(f)
    with open(synthetic_root / "coco/annotations/panoptic_val2017.json") as f:
        pan = json.load(f)
    things = [(c["id"], c["name"]) for c in COCO_CATEGORIES if c["isthing"]]
    assert [(c["id"], c["name"]) for c in inst["categories"]] == things and len(things) == 80
    assert [(c["id"], c["name"], c["isthing"]) for c in pan["categories"]] == [
        (c["id"], c["name"], c["isthing"]) for c in COCO_CATEGORIES
    ]
    used = {s["category_id"] for a in pan["annotations"] for s in a["segments_info"]}
    assert {1, 2, 3, 4, 149, 187} <= used  # person bicycle car motorcycle road sky


def test_panoptic_png_matches_segments_info(synthetic_root):
    coco = synthetic_root / "coco"
    for split in COCO_SPLITS:
        with open(coco / f"annotations/panoptic_{split}.json") as f:
            pan = json.load(f)
        assert {a["image_id"] for a in pan["annotations"]} == {i["id"] for i in pan["images"]}
        for ann in pan["annotations"]:
            ids = _pan_ids(coco / f"panoptic_{split}" / ann["file_name"])
            segs = {s["id"]: s for s in ann["segments_info"]}
            assert len(segs) == len(ann["segments_info"])  # unique ids
            assert set(np.unique(ids).tolist()) - {0} == set(segs)
            for sid, seg in segs.items():
                mask = ids == sid
                ys, xs = np.nonzero(mask)
                assert seg["area"] == mask.sum() and seg["iscrowd"] == 0
                assert seg["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]


def test_instances_json_agrees_with_panoptic(synthetic_root):
    """pycocotools loads the instances json and its masks equal the panoptic thing segments."""
    from pycocotools.coco import COCO

    coco_dir = synthetic_root / "coco"
    for split in COCO_SPLITS:
        api = COCO(str(coco_dir / f"annotations/instances_{split}.json"))
        with open(coco_dir / f"annotations/panoptic_{split}.json") as f:
            pan = json.load(f)
        thing_ids = set(api.getCatIds())
        n_inst = 0
        for ann in pan["annotations"]:
            ids = _pan_ids(coco_dir / f"panoptic_{split}" / ann["file_name"])
            things = [s for s in ann["segments_info"] if s["category_id"] in thing_ids]
            insts = sorted(
                api.loadAnns(api.getAnnIds(imgIds=ann["image_id"])), key=lambda a: a["id"]
            )
            assert len(insts) == len(things)  # written in the same order
            for inst, seg in zip(insts, things):
                assert inst["category_id"] == seg["category_id"] and inst["iscrowd"] == 0
                assert isinstance(inst["segmentation"], list)  # polygons, as real COCO
                np.testing.assert_array_equal(api.annToMask(inst).astype(bool), ids == seg["id"])
                assert inst["area"] == seg["area"] and inst["bbox"] == seg["bbox"]
            n_inst += len(insts)
        assert n_inst == len(api.anns) > 0


def test_panoptic_official_pq_of_gt_is_100(synthetic_root, capsys):
    from panopticapi.evaluation import pq_compute

    coco = synthetic_root / "coco"
    for split in COCO_SPLITS:
        gt_json = str(coco / f"annotations/panoptic_{split}.json")
        gt_dir = str(coco / f"panoptic_{split}")
        res = pq_compute(gt_json, gt_json, gt_folder=gt_dir, pred_folder=gt_dir)
        for group in ("All", "Things", "Stuff"):
            assert res[group]["pq"] == pytest.approx(1.0), (split, group)
            assert res[group]["n"] >= 3


def test_panoptic_stuff_pngs(synthetic_root):
    """The Panoptic FPN semantic PNGs: things 0, stuff 1..53 (as Detectron2's metadata), 255."""
    id_map = semantic_id_map()
    coco = synthetic_root / "coco"
    seen = set()
    for split in COCO_SPLITS:
        with open(coco / f"annotations/panoptic_{split}.json") as f:
            pan = json.load(f)
        for ann in pan["annotations"]:
            ids = _pan_ids(coco / f"panoptic_{split}" / ann["file_name"])
            sem = _png(coco / f"panoptic_stuff_{split}" / ann["file_name"])
            assert sem.dtype == np.uint8 and sem.ndim == 2
            expected = np.full(ids.shape, 255, np.uint8)
            for s in ann["segments_info"]:
                expected[ids == s["id"]] = id_map[s["category_id"]]
            np.testing.assert_array_equal(sem, expected)
            seen |= set(np.unique(sem).tolist())
    assert 0 in seen and 255 in seen and len(seen - {0, 255}) >= 5


# ---------------------------------------------------------------- Detectron2's builtin loaders

_LOADER_SCRIPT = textwrap.dedent("""
    import json, sys
    from detectron2.data import DatasetCatalog, MetadataCatalog
    def str_keys(d):
        return {str(k): v for k, v in d.items()}
    out = {}
    for name in sys.argv[1:]:
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        out[name] = {
            "dicts": dicts,
            "stuff_classes": meta.stuff_classes,
            "thing_classes": meta.thing_classes,
            "stuff_map": str_keys(meta.get("stuff_dataset_id_to_contiguous_id", {})),
            "thing_map": str_keys(meta.get("thing_dataset_id_to_contiguous_id", {})),
            "ignore_label": meta.ignore_label,
            "evaluator_type": meta.evaluator_type,
        }
    print(json.dumps(out, default=str))
    """)


@pytest.fixture(scope="module")
def builtin_dicts(synthetic_root, tmp_path_factory):
    """Detectron2's builtin datasets loaded with DETECTRON2_DATASETS=synthetic_root (subprocess:
    the builtin names are bound to the variable at import time)."""
    names = [
        "cityscapes_fine_sem_seg_train",
        "cityscapes_fine_sem_seg_val",
        "coco_2017_train_panoptic_separated",
        "coco_2017_val_panoptic_separated",
    ]

    def build(_):
        env = dict(os.environ, DETECTRON2_DATASETS=str(synthetic_root))
        proc = subprocess.run(
            [sys.executable, "-c", _LOADER_SCRIPT, *names],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run_once(tmp_path_factory, "builtin_dicts", build)


@pytest.mark.slow
def test_detectron2_loads_cityscapes(builtin_dicts, synthetic_root):
    from cityscapesscripts.helpers.labels import labels

    train_names = [l.name for l in sorted(labels, key=lambda l: l.trainId) if 0 <= l.trainId < 255]
    for name, count in (("train", N_CS_TRAIN), ("val", N_CS_VAL)):
        got = builtin_dicts[f"cityscapes_fine_sem_seg_{name}"]
        assert len(got["dicts"]) == count
        assert got["stuff_classes"] == train_names and got["ignore_label"] == 255
        assert got["evaluator_type"] == "cityscapes_sem_seg"
        for d in got["dicts"]:
            assert d["file_name"].startswith(str(synthetic_root / "cityscapes/leftImg8bit" / name))
            assert (d["height"], d["width"]) == CITYSCAPES_IMAGE_SIZE
            sem = _png(d["sem_seg_file_name"])
            assert sem.shape == CITYSCAPES_IMAGE_SIZE
            assert set(np.unique(sem).tolist()) <= set(range(19)) | {255}


def test_detectron2_loads_coco_panoptic_separated(builtin_dicts):
    id_map = semantic_id_map()
    stuff_map = {k: v for k, v in id_map.items() if v > 0}
    for split, count in COCO_SPLITS.items():
        got = builtin_dicts[f"coco_2017_{split[:-4]}_panoptic_separated"]
        assert len(got["dicts"]) == count
        assert got["evaluator_type"] == "coco_panoptic_seg" and got["ignore_label"] == 255
        # Our semantic PNG values are exactly Detectron2's contiguous stuff ids (0 = things).
        assert {int(k): v for k, v in got["stuff_map"].items()} == {0: 0, **stuff_map}
        assert len(got["stuff_classes"]) == 54 and len(got["thing_classes"]) == 80
        n_ann = 0
        for d in got["dicts"]:
            assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
            assert (
                os.path.basename(d["sem_seg_file_name"])[:-4]
                == os.path.basename(d["file_name"])[:-4]
            )
            assert Image.open(d["file_name"]).size == (d["width"], d["height"])
            for a in d["annotations"]:
                assert 0 <= a["category_id"] < 4  # contiguous ids of person/bicycle/car/motorcycle
                assert all(len(p) >= 6 for p in a["segmentation"])
            n_ann += len(d["annotations"])
        assert n_ann >= 3 * count


# ---------------------------------------------------------------- determinism, caching, crashes


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name in ("a", "b", "c"):
        seed = 1 if name == "c" else 0
        generate_datasets(tmp_path / name, seed=seed, num_train=2, num_val=1)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert set(a) == set(c)  # same layout...
    images = [k for k in a if k.endswith((".jpg", "_leftImg8bit.png"))]
    assert images and all(a[k] != c[k] for k in images)  # ...different content


def test_rerun_is_noop_and_other_args_regenerate(tmp_path):
    assert generate_cityscapes(tmp_path, num_train=1, num_val=1) is True
    def files():  # every entry of the tree: what a rebuild (or a rewrite in place) changes
        return {(d, n, st.st_ino, st.st_mtime_ns, st.st_size)
                for d, dirs, names in os.walk(tmp_path) for n in dirs + names
                for st in [os.stat(os.path.join(d, n))]}

    before = files()
    assert any(n == MARKER_NAME for _, n, *_ in before)
    assert generate_cityscapes(tmp_path, num_train=1, num_val=1) is False
    assert files() == before  # the cached dataset is reused: nothing written, moved or replaced
    assert generate_cityscapes(tmp_path, num_train=2, num_val=1) is True
    assert len(glob.glob(str(tmp_path / "cityscapes/leftImg8bit/train/*/*.png"))) == 2
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # nothing left behind


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import rsp_d2.data.synthetic.coco_panoptic as writer

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "convert_panoptic_json", broken)  # fails after images are written
    with pytest.raises(RuntimeError, match="disk full"):
        generate_coco_panoptic(tmp_path, num_train=1, num_val=1)
    assert os.listdir(tmp_path) == []


def test_killed_build_is_not_complete(tmp_path):
    """SIGKILL mid-run leaves only a hidden temp dir; the next run builds the real dataset."""
    code = (
        "import sys; from rsp_d2.data.synthetic import generate_cityscapes; "
        "generate_cityscapes(sys.argv[1], num_train=500, num_val=1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not glob.glob(str(tmp_path / ".cityscapes.tmp-*/leftImg8bit/train/*/*.png")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "cityscapes").exists()
    assert glob.glob(str(tmp_path / ".cityscapes.tmp-*"))
    assert generate_cityscapes(tmp_path, num_train=1, num_val=1) is True
    assert os.listdir(tmp_path) == ["cityscapes"]  # the dead run's temp dir was cleaned up


def test_refuses_to_overwrite_foreign_dataset(tmp_path):
    real = tmp_path / "coco" / "train2017"
    real.mkdir(parents=True)
    (real / "000000000009.jpg").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match=str(tmp_path / "coco")):
        generate_coco_panoptic(tmp_path)
    assert (real / "000000000009.jpg").read_bytes() == b"real data"


# ---------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli(tmp_path):
    tool = os.path.join(REPO, "tools", "make_synthetic_datasets.py")
    cmd = [tool, "--root", str(tmp_path), "--only", "coco"]
    cmd += ["--num-train", "1", "--num-val", "1", "--seed", "3"]
    first = run_script(*cmd)
    assert first.returncode == 0, first.stderr
    assert "generated" in first.stdout and not (tmp_path / "cityscapes").exists()
    # the entry point ran above; these two in-process
    again = call_main(*cmd)
    assert again.returncode == 0 and "already complete" in again.stdout
    bad = call_main(tool, "--root", tmp_path, "--num-train", "0")
    assert bad.returncode == 2 and "--num-train" in bad.stderr
