"""tests/fork_server.py: a forked run behaves as ``python SCRIPT ARGS...`` in a fresh interpreter
would, for what the tests look at (the suite's runs of train_net.py and the tools go through it)."""
import json
import os
import signal
import textwrap

from fork_server import run_python

_REPORT = textwrap.dedent("""\
    import json, os, sys
    fresh = [m for m in ("detectron2", "rsp_d2") if m in sys.modules]
    from detectron2.data import MetadataCatalog
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0],
                      "x": os.environ.get("FORK_TEST_X"), "preloaded": fresh,
                      "root": MetadataCatalog.get("cityscapes_fine_sem_seg_val").gt_dir}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
""")


def _script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_run_gets_its_argv_environment_and_its_own_detectron2(tmp_path):
    script = _script(tmp_path, "report.py", _REPORT)
    runs = {}
    for root in ("root_a", "root_b"):  # one server: the environments differ only there
        env = dict(os.environ, FORK_TEST_X=root, DETECTRON2_DATASETS=str(tmp_path / root))
        proc = run_python(script, 3, root, env=env)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr == "to stderr\n"
        runs[root] = json.loads(proc.stdout)
    for root, seen in runs.items():
        assert seen["argv"] == [str(script), "3", root] and seen["x"] == root
        assert seen["preloaded"] == []  # each run imports Detectron2 and rsp_d2 itself...
        assert seen["root"].startswith(str(tmp_path / root))  # ...with its own dataset root
        assert seen["path0"] == str(tmp_path)  # the script's folder, as `python SCRIPT` sets
        assert os.path.samefile(seen["cwd"], os.path.dirname(os.path.dirname(__file__)))


def test_exit_status_as_an_interpreter_reports_it(tmp_path):
    cases = {"raise ValueError('bad')": (1, "ValueError: bad"),
             "import sys; sys.exit('message')": (1, "message"),
             "import sys; sys.exit()": (0, ""),
             "import os, signal; os.kill(os.getpid(), signal.SIGKILL)": (-signal.SIGKILL, "")}
    for i, (code, (status, stderr)) in enumerate(cases.items()):
        proc = run_python(_script(tmp_path, f"s{i}.py", code + "\n"))
        assert proc.returncode == status and stderr in proc.stderr, (code, proc)


def test_merged_output_keeps_the_order(tmp_path):
    script = _script(tmp_path, "both.py", "import sys\nfor i in range(3):\n"
                     "    print(i, flush=True); print('e', i, file=sys.stderr, flush=True)\n")
    proc = run_python(script, merge_output=True)
    assert proc.returncode == 0 and proc.stderr is None
    assert proc.stdout.split() == ["0", "e", "0", "1", "e", "1", "2", "e", "2"]
