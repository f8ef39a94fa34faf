"""In-process tests of rsp_d2.engine: atomic checkpoints, the dataset check, the end of a
distributed process. Datasets are registered here under test-only names."""
import os
import uuid

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog

from rsp_d2.engine import AtomicDetectionCheckpointer, DatasetNotFoundError, check_datasets


def _register(evaluator_type, records=(), **metadata):
    name = f"rsp_test_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: list(records))
    MetadataCatalog.get(name).set(evaluator_type=evaluator_type, **metadata)
    return name


def test_check_datasets_names_missing_paths_and_env(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere" / "leftImg8bit")
    name = _register("sem_seg", image_dir=missing, gt_dir=str(tmp_path))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as e:
        check_datasets([name, "rsp_test_not_registered"])
    message = str(e.value)
    assert missing in message and "DETECTRON2_DATASETS" in message
    assert "'rsp_test_not_registered' is not registered" in message
    assert str(tmp_path) + " does not exist" not in message  # gt_dir exists
    check_datasets([_register("sem_seg", image_dir=str(tmp_path))])  # all there: no error


class _Exploding:
    """A checkpointable whose state cannot be pickled: torch.save fails half-way."""

    def state_dict(self):
        return {"fine": torch.zeros(1000), "bad": lambda: None}

    def load_state_dict(self, state):
        pass


def test_checkpoint_write_is_atomic(tmp_path):
    model = torch.nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    good = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"

    with torch.no_grad():
        model.weight.fill_(7.0)
    failing = AtomicDetectionCheckpointer(model, str(tmp_path), extra=_Exploding())
    with pytest.raises(Exception):
        failing.save("model_0000001")  # overwrite attempt dies inside torch.save
    with pytest.raises(Exception):
        failing.save("model_0000002")
    # the old checkpoint is intact, no partial new one, no temporary files, tag unchanged
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    reloaded = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    torch.testing.assert_close(reloaded["model"], good["model"])

    checkpointer.save("model_0000002")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000002.pth")


def test_a_finished_process_closes_its_process_groups(tmp_path):
    """main() ends each process of a distributed job by destroying its process groups: left to
    interpreter exit, Gloo's threads can abort a complete run (SIGABRT)."""
    import torch.distributed as dist

    from rsp_d2.engine.launcher import _close_process_groups

    _close_process_groups()  # not distributed: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        _close_process_groups()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
