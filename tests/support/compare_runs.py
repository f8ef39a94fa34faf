"""Runs of tools/compare_heads.py laid out as finished ones, without training: the numbers are
chosen by the test."""
import json

from rsp_d2.analysis.compare import is_finished, run_dir

CPU = "Test CPU"


def finished_run(root, variant, seed, miou, cpu=CPU, band=None, weights=True, **info):
    """A finished run of `variant` at `seed` under `root` (a pathlib.Path) scoring `miou`;
    weights=False leaves out model_final.pth (a run's record as kept in git); `info` goes into
    its run_info.json beside wall_s and cpu."""
    out = root / variant.name / f"seed{seed}"
    (out / "inference").mkdir(parents=True)
    if weights:
        (out / "model_final.pth").write_bytes(b"")
    with open(out / "inference" / "results.json", "w") as f:
        json.dump({"sem_seg": {"mIoU": miou, "IoU-rider": miou},
                   **({"sem_seg_band": {"mIoU": band}} if band is not None else {})}, f)
    with open(out / "run_info.json", "w") as f:
        json.dump({"wall_s": 1.0, "cpu": cpu, **info}, f)
    assert is_finished(run_dir(str(root), variant, seed))
    return out
