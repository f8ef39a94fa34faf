"""Loading weights never runs code from the file (rsp_d2/engine/safe_load.py), on every path
that reads weights; model-zoo ``.pkl`` files (numpy arrays in dicts) still load; ``--resume``
only loads a checkpoint of OUTPUT_DIR; a URL without network is one error line.

Each malicious file holds the tiny model's real weights plus one object whose unpickling calls
``os.system("touch MARKER")``: the test asserts the refusal names the object and that MARKER was
never created.
"""
import os
import pickle

import numpy as np
import pytest
import torch

from rsp_d2.config import load_config
from rsp_d2.engine import cli, load_model
from support.tools import assert_clear_error, call_main


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tiny, tmp_path):
    """(config, {"pth": path, "pkl": path}, marker): the tiny RSP-4's weights plus a payload."""
    cfg, ckpt = tiny["rsp"]
    marker = tmp_path / "payload_ran"
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    pth = tmp_path / "evil.pth"
    torch.save({"model": weights, "extra": _Payload(marker)}, pth)
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in weights.items()}, "__author__": "x",
                     "extra": _Payload(marker)}, f, protocol=2)
    yield cfg, {"pth": str(pth), "pkl": str(pkl)}, marker
    assert not marker.exists(), "the checkpoint's code ran"


def _train_net(capsys, *argv):
    code = cli([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, err


@pytest.mark.parametrize("kind", ["pth", "pkl"])
@pytest.mark.parametrize("mode", ["--eval-only", "train"])
def test_train_net_refuses_code_in_weights(evil, capsys, tmp_path, kind, mode):
    cfg, files, _ = evil
    code, err = _train_net(capsys, "--config-file", cfg, *([mode] if mode != "train" else []),
                           "MODEL.WEIGHTS", files[kind], "OUTPUT_DIR", tmp_path / "out")
    assert code == 2 and err.strip().splitlines() == [
        f"error: cannot load checkpoint {files[kind]}: it holds a disallowed object "
        "'posix.system'; a checkpoint may hold only tensors, arrays, numbers, strings and "
        "containers, and loading this one could run code: use weights from a source you trust, "
        "re-saved as a plain state dict"]
    assert not (tmp_path / "out").exists()


def test_resume_refuses_code_in_the_last_checkpoint(evil, capsys, tmp_path):
    cfg, files, _ = evil
    out = tmp_path / "out"
    out.mkdir()
    os.replace(files["pth"], out / "model_0000009.pth")
    (out / "last_checkpoint").write_text("model_0000009.pth")
    code, err = _train_net(capsys, "--config-file", cfg, "--resume", "OUTPUT_DIR", out)
    assert code == 2 and "it holds a disallowed object 'posix.system'" in err


@pytest.mark.parametrize("name", ["/etc/passwd", "../model_final.pth", ".."])
def test_resume_loads_only_a_checkpoint_of_output_dir(tiny, capsys, tmp_path, name):
    cfg, ckpt = tiny["rsp"]
    out = tmp_path / "out"
    out.mkdir()
    os.link(ckpt, tmp_path / "model_final.pth")  # a loadable file outside OUTPUT_DIR
    (out / "last_checkpoint").write_text(name)
    code, err = _train_net(capsys, "--config-file", cfg, "--resume", "OUTPUT_DIR", out)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --resume: {out}/last_checkpoint names {name!r}, which is not a file name in "
        f"{out} (it may only name a checkpoint of that folder): remove last_checkpoint to start "
        "a new run"]


@pytest.mark.parametrize("tool,args", [
    ("demo/demo.py", lambda c, w, d, img: ["--config-file", c, "--input", img, "--output", d,
                                           "--opts", "MODEL.WEIGHTS", w]),
    ("tools/export_model.py", lambda c, w, d, img: ["--config-file", c, "--output",
                                                    d.parent / "m.onnx", "--sample-size", 64, 128,
                                                    "MODEL.WEIGHTS", w]),
    ("tools/visualize_relations.py", lambda c, w, d, img: ["--config-file", c, "--checkpoint", w,
                                                           "--input", img, "--output", d]),
])
def test_tools_refuse_code_in_weights(evil, val_images, tmp_path, tool, args):
    cfg, files, _ = evil
    proc = call_main(tool, *args(cfg, files["pth"], tmp_path / "drawn", val_images[0]))
    assert_clear_error(proc, f"cannot load checkpoint {files['pth']}: it holds a disallowed "
                             "object 'posix.system'")


def test_model_zoo_pkl_loads(tiny, tmp_path):
    """A Detectron2 model-zoo file (numpy arrays, Python 2 pickle protocol) initializes the
    model, as ImageNet backbones do."""
    cfg_path, ckpt = tiny["rsp"]
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    pkl = tmp_path / "zoo.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in weights.items()},
                     "__author__": "model zoo"}, f, protocol=2)
    model = load_model(load_config(cfg_path, ["MODEL.WEIGHTS", str(pkl)]))
    loaded = model.state_dict()
    assert all(np.array_equal(loaded[k].numpy(), v.numpy()) for k, v in weights.items())


def test_url_weights_without_network(tiny, capsys, tmp_path):
    cfg, _ = tiny["rsp"]
    url = "http://127.0.0.1:9/R-18.pkl"  # the discard port: refused at once, no network used
    code, err = _train_net(capsys, "--config-file", cfg, "--eval-only", "MODEL.WEIGHTS", url,
                           "OUTPUT_DIR", tmp_path / "out")
    # iopath's progress bar may come first; then the one error line
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert last.startswith(f"error: MODEL.WEIGHTS {url}: cannot download it (")
    assert last.endswith("): download the file where there is network and set MODEL.WEIGHTS to "
                         "its local path")
