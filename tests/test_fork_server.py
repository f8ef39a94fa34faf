"""tests/support/fork_server.py: a forked run behaves as ``python SCRIPT ARGS...`` in a fresh interpreter
would, for what the tests look at (the suite's runs of train_net.py and the tools go through it),
and a run that times out or a server that dies spoils no later run."""
import json
import os
import signal
import subprocess
import textwrap

import pytest

from support import fork_server
from support.fork_server import run_python

pytestmark = pytest.mark.slow  # each server costs seconds of imports, and these start several

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


_EXIT = textwrap.dedent("""\
    import atexit, os, sys, threading, time
    import matplotlib
    atexit.register(print, "atexit")
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread"))).start()
    folder = matplotlib.get_configdir()
    print(os.access(folder, os.W_OK))
    print(folder)
""")


def test_exit_joins_threads_then_runs_atexit_and_keeps_matplotlibs_folder(tmp_path):
    # HOME a file: no ~/.config/matplotlib, where matplotlib falls back to a temporary folder
    # that its atexit handler removes (a server's handler: every run would run it)
    (tmp_path / "home").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPL"))}
    env["HOME"] = str(tmp_path / "home")
    script = _script(tmp_path, "exit.py", _EXIT)
    first = run_python(script, env=env)
    second = run_python(script, env=env)
    for proc in (first, second):
        assert proc.returncode == 0, proc.stderr
        writable, folder, *rest = proc.stdout.splitlines()
        assert rest == ["thread", "atexit"]  # as at interpreter exit, in that order
        assert writable == "True" and os.path.isdir(folder)  # the first run left it in place


_PARENT = "import os\nprint(os.getppid())\n"  # the pid of the run's server
_SLEEP = ("import sys, time\nprint('out', flush=True)\n"
          "print('err', file=sys.stderr, flush=True)\ntime.sleep(600)\n")


def test_a_run_past_its_timeout_is_killed_and_the_next_run_works(tmp_path):
    parent = _script(tmp_path, "parent.py", _PARENT)
    server = run_python(parent).stdout  # a warm server: the next child starts at once
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_python(_script(tmp_path, "sleep.py", _SLEEP), timeout=5)
    assert timed_out.value.output == "out\n" and timed_out.value.stderr == "err\n"
    again = run_python(parent)
    assert again.returncode == 0 and again.stdout == server  # the same server, still in step


def test_a_run_that_ends_as_it_is_killed_leaves_the_answers_in_step(tmp_path, monkeypatch):
    parent = _script(tmp_path, "parent.py", _PARENT)
    server = run_python(parent).stdout
    kill = os.kill

    def kill_then_lookup_error(pid, sig):  # as if the run had ended and been waited for
        kill(pid, sig)
        raise ProcessLookupError(pid)

    with monkeypatch.context() as patch, pytest.raises(subprocess.TimeoutExpired) as timed_out:
        patch.setattr(os, "kill", kill_then_lookup_error)
        run_python(_script(tmp_path, "sleep.py", _SLEEP), timeout=5, merge_output=True)
    assert timed_out.value.output == "out\nerr\n" and timed_out.value.stderr is None
    assert run_python(parent).stdout == server


def test_a_server_that_gives_no_pid_in_time_is_replaced(tmp_path):
    env = dict(os.environ, FORK_TEST_FRESH=str(tmp_path))  # a server of its own, not warm yet
    parent = _script(tmp_path, "parent.py", _PARENT)
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_python(parent, env=env, timeout=0.01)  # it is still importing torch
    assert timed_out.value.output == "" and timed_out.value.stderr == ""
    proc = run_python(parent, env=env)  # a fresh server, not the answers of the run above
    assert proc.returncode == 0 and proc.stdout.strip().isdigit(), proc


def test_a_dead_server_is_replaced(tmp_path):
    parent = _script(tmp_path, "parent.py", _PARENT)
    first = int(run_python(parent).stdout)
    server, = [s for s in fork_server._SERVERS.values() if s._proc.pid == first]
    os.kill(first, signal.SIGKILL)  # between two runs
    server._proc.wait(timeout=60)
    second = int(run_python(parent).stdout)
    assert second != first

    # during a run: that run fails, saying so, and the next one gets a fresh server
    with pytest.raises(RuntimeError, match="exited"):
        run_python(_script(tmp_path, "kill.py", "import os, signal\n"
                           "os.kill(os.getppid(), signal.SIGKILL)\n"))
    third = int(run_python(parent).stdout)
    assert third not in (first, second)


def test_close_kills_a_server_that_does_not_end():
    server = fork_server._Server(dict(os.environ))
    server.close(timeout=0.01)  # it is still importing torch, and does not read its stdin yet
    assert server._proc.returncode == -signal.SIGKILL
