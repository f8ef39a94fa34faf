"""``python SCRIPT ARGS...`` for the tests, forked from a warm interpreter: :func:`run_python`.

A fresh interpreter spends seconds importing torch and torchvision before a tool or train_net.py
reads its arguments, and the suite starts dozens of short runs. A server (this file, run as a
script) imports the third-party libraries once, then forks one child per run. Each run is still
a process of its own, with its own exit status, signals, working directory, environment and
output, that runs SCRIPT as ``__main__`` as ``python SCRIPT ARGS...`` would. The server imports
neither Detectron2 nor this project: each run imports them itself, so Detectron2 binds its
builtin datasets to the run's $DETECTRON2_DATASETS and rsp_d2 registers its heads, datasets and
evaluators, as in a fresh interpreter. What only a fresh interpreter shows (import-time
warnings, imports without Detectron2, the processes Detectron2's launch spawns) is tested with
fresh ones.

Server protocol: one JSON line per run on stdin,
``{"argv": [SCRIPT, ARGS...], "cwd": DIR, "env": {...}, "stdout": PATH, "stderr": PATH}``; on
its answer descriptor (stdout) ``{"pid": N}`` once the child has started and
``{"returncode": N}`` once it has ended (negative: killed by that signal, as ``subprocess``
reports it). End of stdin ends the server.

A run that times out is killed and its answer drained, so that the next run's answers stay in
step; an exchange that cannot be finished (no pid in time, an interrupt, a server that died)
throws the server away, and the next run in that environment starts a fresh one.
"""
import atexit
import importlib
import json
import os
import queue
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900  # a hung run must fail its test, not the CI job
_DRAIN_S = 60  # for the answer of a run killed on its timeout
_CLOSE_S = 60  # for the server to end (after its current run) once its stdin is closed
# What the server imports: the libraries Detectron2, rsp_d2 and its tools use, but Detectron2
# (the last ones are optional).
_LIBRARIES = ("torch", "torchvision", "torchvision.ops", "numpy", "cv2", "PIL.Image",
              "pycocotools.mask", "fvcore.nn")
_OPTIONAL_LIBRARIES = ("matplotlib", "onnx", "onnxruntime", "triton")
# Read after the imports above (by Detectron2's, CUDA's and Gloo's initialization, and pytest's
# name of the running test): runs that differ only there share a server.
_NOT_READ_BY_THE_SERVER = ("DETECTRON2_DATASETS", "CUDA_VISIBLE_DEVICES", "GLOO_SOCKET_IFNAME",
                           "PYTEST_CURRENT_TEST")


# --- the client ---------------------------------------------------------------------------------

def run_python(script, *args, env=None, timeout=TIMEOUT_S, merge_output=False):
    """``python SCRIPT ARGS...`` in the repository root, as a forked child of the server of
    `env` (default: this process's environment), with its output captured: a CompletedProcess
    (text; stderr None and merged into stdout with `merge_output`)."""
    env = dict(os.environ if env is None else env)
    key = tuple(sorted((k, v) for k, v in env.items() if k not in _NOT_READ_BY_THE_SERVER))
    server = _SERVERS.get(key)
    if server is None or not server.alive():  # a dead one (killed, crashed, thrown away)
        if server is not None:
            server.close()
        server = _SERVERS[key] = _Server(dict(key))
    return server.run([str(script), *map(str, args)], env, timeout, merge_output)


_SERVERS = {}  # the sorted items of an environment -> its _Server


class _Server:
    """A server process started in `env`, and the answers it sends back."""

    def __init__(self, env):
        self._log = tempfile.TemporaryFile()  # what the server itself prints (import warnings)
        # Matplotlib's config and font cache folder, owned here: without a writable one it
        # falls back to a temporary folder that an atexit handler removes, and the server's
        # handlers run at the end of every run, so the first run would remove it for the rest.
        self._mplconfigdir = tempfile.mkdtemp(prefix="fork_server_mpl-")
        env = {k: v for k, v in env.items() if k not in _NOT_READ_BY_THE_SERVER}
        env["MPLCONFIGDIR"] = self._mplconfigdir
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], cwd=REPO,
                                      env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, text=True)
        self._answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        atexit.register(self.close)

    def _read(self):
        for line in self._proc.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)

    def _answer(self, timeout):
        answer = self._answers.get(timeout=timeout)
        if answer is None:
            self._log.seek(0)
            raise RuntimeError(f"{__file__} exited:\n{self._log.read().decode()[-4000:]}")
        return answer

    def alive(self):
        return self._proc.poll() is None

    def run(self, argv, env, timeout, merge_output):
        with tempfile.TemporaryDirectory() as d:
            out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
            request = {"argv": argv, "cwd": REPO, "env": env, "stdout": out,
                       "stderr": out if merge_output else err}
            pid, in_step = None, False
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                pid = self._answer(timeout)["pid"]
                try:
                    returncode = self._answer(timeout)["returncode"]
                except queue.Empty:
                    _kill(pid)
                    self._answer(_DRAIN_S)  # its returncode: the next run's answers stay in step
                    in_step = True
                    raise
                in_step = True
            except queue.Empty:
                raise subprocess.TimeoutExpired(
                    argv, timeout, output=_read_text(out),
                    stderr=None if merge_output else _read_text(err)) from None
            finally:
                if not in_step:  # an answer may still come: the server is of no further use
                    if pid is not None:
                        _kill(pid)
                    self.close(timeout=0)
            return subprocess.CompletedProcess(
                argv, returncode, _read_text(out), None if merge_output else _read_text(err))

    def close(self, timeout=_CLOSE_S):
        """End the server: end of its stdin, then SIGKILL if it has not ended within
        `timeout` seconds (a run still going)."""
        atexit.unregister(self.close)
        try:
            self._proc.stdin.close()
        except BrokenPipeError:  # it died: part of a request was left in the buffer
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
        shutil.rmtree(self._mplconfigdir, ignore_errors=True)


def _kill(pid):
    """SIGKILL a run; it may have ended and been waited for by the server meanwhile."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_text(path):
    """The text of an output file; "" if the run never opened it (a run that timed out before
    its child started)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# --- the server ---------------------------------------------------------------------------------

def _exit_code(code):
    """The exit status `SystemExit(code)` gives an interpreter (a message is printed, status 1)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _redirect(fd, path, flags):
    new = os.open(path, flags, 0o644)
    os.dup2(new, fd)
    os.close(new)


def _become(request, answers, path):
    """In the forked child: ``python ARGV...`` in the request's directory and environment;
    `path`: the interpreter's sys.path after its first entry."""
    code = 1
    try:
        answers.close()
        _redirect(0, os.devnull, os.O_RDONLY)  # the server's stdin carries the requests
        _redirect(1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if request["stderr"] == request["stdout"]:
            os.dup2(1, 2)
        else:
            _redirect(2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        sys.path[:] = [os.path.dirname(os.path.abspath(sys.argv[0])), *path]  # as `python SCRIPT`
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            # What interpreter exit runs: first join the non-daemon threads...
            try:
                threading._shutdown()
            except BaseException:  # e.g. an interrupt while joining: reported, exit goes on
                traceback.print_exc()
            atexit._run_exitfuncs()  # ...then the atexit handlers (logging flushes its files)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def serve():
    # The answers get their own descriptor: what an import prints must not reach them.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    path = sys.path[1:]
    for name in _LIBRARIES:
        importlib.import_module(name)
    for name in _OPTIONAL_LIBRARIES:
        # Absent, or failing to import here (e.g. built for another torch): not the server's
        # concern, a run that imports it gets the error as a fresh interpreter would.
        try:
            importlib.import_module(name)
        except Exception:
            pass

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become(request, answers, path)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
