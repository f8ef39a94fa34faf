"""``python tests/support/kill_at.py MOMENT ARG [SIGNAL] -- TRAIN_NET_ARGS...``: train_net.py, sent
SIGNAL (default SIGKILL; SIGINT as Ctrl-C, SIGTERM) by itself at a chosen moment, so that the
kill-and-resume tests are deterministic:

* ``iteration N``: during iteration N, after its forward pass, before the optimizer step;
* ``write NAME``: while writing checkpoint NAME (e.g. model_0000005.pth), after its bytes are
  on disk and before the rename that would make it visible.
"""
import os
import runpy
import signal
import sys


_SIGNAL = [signal.SIGKILL]


def _kill():
    sys.stdout.flush()
    os.kill(os.getpid(), _SIGNAL[0])


def _kill_in_iteration(n):
    from rsp_d2.engine import RSPTrainer

    keep = RSPTrainer._keep_outputs

    def keep_outputs(self, module, inputs, outputs):
        keep(self, module, inputs, outputs)
        if module.training and self.iter == n:
            _kill()

    RSPTrainer._keep_outputs = keep_outputs


def _kill_in_write(name):
    replace = os.replace

    def patched(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            _kill()
        return replace(src, dst, *args, **kwargs)

    os.replace = patched


if __name__ == "__main__":
    split = sys.argv.index("--")
    moment, arg, *sig = sys.argv[1:split]
    train_args = sys.argv[split + 1:]
    if sig:
        _SIGNAL[0] = getattr(signal, sig[0])
    # Ctrl-C reaches a run in the foreground; a run started from a background job (`cmd &` in
    # a script, as CI may run the suite) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: restore the foreground's.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    {"iteration": lambda: _kill_in_iteration(int(arg)), "write": lambda: _kill_in_write(arg)}[
        moment]()
    sys.argv = ["train_net.py", *train_args]
    runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "..", "train_net.py"),
                   run_name="__main__")
