"""Every rsp_d2 module imports, and train_net.py and every script of tools/ and demo/ load, in a
fresh interpreter. The suite's runs are forked from a server that has imported torch and the
other third-party libraries (tests/support/fork_server.py), and the tests import many modules in one
process: either can hide a module that uses a submodule it never imports."""
import json
import subprocess
import sys
import textwrap

import pytest

from support.tools import REPO

_IMPORT_ALL = textwrap.dedent("""
    import glob, importlib, importlib.util, json, os, pkgutil, sys, traceback
    import rsp_d2

    # Not in requirements.txt: a module that needs one of them is skipped where it is absent
    # (rsp_d2.layers.rse_triton already imports without triton; CUDA-only, as is triton).
    OPTIONAL = {"triton"}
    report = {"modules": [], "scripts": [], "skipped": {}, "failed": {}}

    def absent_optional(e):
        return (isinstance(e, ModuleNotFoundError) and e.name
                and e.name.split(".")[0] in OPTIONAL)

    for info in pkgutil.walk_packages(rsp_d2.__path__, "rsp_d2."):
        try:
            importlib.import_module(info.name)
            report["modules"].append(info.name)
        except Exception as e:
            if absent_optional(e):
                report["skipped"][info.name] = f"optional {e.name} is not installed"
            else:
                report["failed"][info.name] = traceback.format_exc()

    # As `python SCRIPT` without running main: each script guards it with
    # `if __name__ == "__main__"` (train_demo.py and pretrain_backbone.py set
    # DETECTRON2_DATASETS only inside main), and has its folder first on sys.path.
    for path in ["train_net.py", *sorted(glob.glob("tools/*.py") + glob.glob("demo/*.py"))]:
        name = "_script_" + path[:-3].replace("/", "_")
        sys.path.insert(0, os.path.abspath(os.path.dirname(path)))
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            report["scripts"].append(path)
        except Exception as e:
            if absent_optional(e):
                report["skipped"][path] = f"optional {e.name} is not installed"
            else:
                report["failed"][path] = traceback.format_exc()
        finally:
            sys.path.pop(0)
    print(json.dumps(report))
""")


@pytest.mark.slow
def test_every_module_and_script_imports_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert not report["failed"], "\n".join(report["failed"].values())
    assert "rsp_d2.layers.rse_triton" in report["modules"] + list(report["skipped"])
    assert "tools/train_demo.py" in report["scripts"] and "demo/demo.py" in report["scripts"]
