"""Timing and peak-memory measurement for tools/benchmark.py.

A *case* is a JSON-able dict understood by :func:`rsp_d2.analysis.benchmark_cases.build_case`,
which returns a zero-argument ``run()``. Time is wall-clock (``time.perf_counter``) per
``run()``, summarized by the median. Peak memory is measured in a fresh process per case:

* CPU: ``ru_maxrss`` (the resident-set high-water mark the kernel keeps) after the run minus
  its value after the inputs and the model exist and a tiny warm-up run has initialized the
  libraries, i.e. the extra resident memory the run needed at its peak, allocator slack and
  library workspaces included. Worker processes are forked from a ``forkserver`` that only
  imported the modules, so nothing the benchmark process allocated is inherited.
  With ``freed_returned=True`` the worker first fixes glibc's mmap threshold at its initial
  128 KiB (``mallopt(M_MMAP_THRESHOLD)``, what ``MALLOC_MMAP_THRESHOLD_=131072`` does): every
  tensor then gets its own mapping, returned to the kernel when freed, so the high-water mark
  is what the live tensors and workspaces needed, without the freed heap memory glibc keeps
  by default (its threshold rises to the size of the largest block freed, up to 32 MiB, and
  smaller blocks then come from a heap that rarely shrinks).
* CUDA: ``torch.cuda.max_memory_allocated`` after the run minus the allocation before it.
"""
import contextlib
import multiprocessing
import os
import platform
import resource
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..utils.errors import InputError
from ..layers import rse_cpp, rse_extractor
from ..utils.machine import cpu_model, cpu_vector_isa
from .stats import summarize
from ..utils.paths import check_output_file

__all__ = ["machine_info", "time_run", "summarize_times", "peak_extra_memory_mb", "load_average",
           "relation_share", "DEVICES", "check_settings", "report_paths"]

# The memory method differs by device kind and uses the current CUDA device (choose it with
# CUDA_VISIBLE_DEVICES), so a device index would not be honoured.
DEVICES = ("cpu", "cuda")

_PRELOAD = ["torch", "rsp_d2.analysis.benchmark_cases"]


def report_paths(out: str) -> Tuple[str, str]:
    """(JSON, markdown) written by tools/benchmark.py for ``--out``: the markdown next to it."""
    return out, os.path.splitext(out)[0] + ".md"


def check_settings(*, out: str, device: str, repeats: int, train_batch: int,
                   threads: Optional[int]) -> None:
    """Refuse, before anything is measured, the arguments of tools/benchmark.py that would end
    in a traceback minutes later or in a report of nothing (a batch of 0, no timed call).

    Raises:
        InputError: naming the argument, its value and what is expected.
    """
    for flag, value in (("--repeats", repeats), ("--train-batch", train_batch),
                        ("--threads", threads)):
        if value is not None and value < 1:
            raise InputError(f"{flag} {value}: expected a positive integer")
    if device not in DEVICES:
        raise InputError(f"--device {device}: expected cpu or cuda (select a GPU with "
                         "CUDA_VISIBLE_DEVICES)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible here; use --device cpu")
    json_path, md_path = report_paths(out)
    if os.path.abspath(md_path) == os.path.abspath(json_path):
        raise InputError(f"--out {out}: the markdown report would overwrite it; give a .json path")
    check_output_file(json_path, "--out", create_parents=True)
    check_output_file(md_path, "--out's markdown", create_parents=True)


def load_average() -> List[float]:
    """1/5/15-minute load averages: other processes on the machine inflate wall times."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(device: str = "cpu") -> Dict:
    info = {
        "cpu": cpu_model(),
        "cpu_isa": cpu_vector_isa(),
        "rse_cpp_loops": rse_cpp.cpu_isa() or "unavailable",
        "rse_cpp_threads": rse_cpp.cpu_thread_pool(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def time_run(run: Callable[[], None], repeats: int, warmup: int = 1,
             device: str = "cpu") -> List[float]:
    """Seconds per call of `run` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize_times(times: List[float]) -> Dict:
    """The timing row of `times` (seconds): median (the number reported), min and max in
    milliseconds, rounded, and the repeat count; the statistics are :func:`stats.summarize`'s."""
    s = summarize([t * 1e3 for t in times])
    return {"median_ms": round(s["median"], 2), "min_ms": round(s["min"], 2),
            "max_ms": round(s["max"], 2), "repeats": s["n"]}


# mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3


def _map_every_block():
    """Give every allocation of this process from 128 KiB up its own mapping (glibc only)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError) as e:
        raise RuntimeError(f"freed_returned needs glibc's mallopt: {e}") from None
    if mallopt(_M_MMAP_THRESHOLD, 128 * 1024) != 1:
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD, 128 KiB) failed")


def _measure_in_child(case: Dict, conn, freed_returned: bool = False):
    # Runs in a fresh process forked from the forkserver.
    try:
        from rsp_d2.analysis.benchmark_cases import build_case, warmup_case

        device = case.get("device", "cpu")
        if freed_returned and device == "cpu":
            _map_every_block()
        build_case(warmup_case(case))()  # first-use initialization of thread pools, oneDNN...
        run = build_case(case)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            extra = torch.cuda.max_memory_allocated() - before
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            run()
            extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        conn.send({"peak_extra_mb": round(extra / 2 ** 20, 1)})
    except Exception as e:  # reported, not raised: one failing case must not stop the run
        conn.send({"error": f"{type(e).__name__}: {e}"})


def _peak_in_fresh_process(case: Dict, timeout: float, freed_returned: bool) -> Dict:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # the server starts with the first worker
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure_in_child, args=(case, child, freed_returned))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            return {"error": f"timed out after {timeout} s"}
        return parent.recv()
    except EOFError:
        return {"error": f"worker died (exit code {proc.exitcode}; out of memory?)"}
    finally:
        proc.join()


def peak_extra_memory_mb(case: Dict, timeout: float = 600, freed_returned: bool = False,
                         samples: int = 1) -> Dict:
    """{"peak_extra_mb": MiB} for one run of `case` in a fresh process, or {"error": ...};
    `freed_returned`: on the CPU, with glibc's mmap threshold fixed (see the module's doc).
    With `samples` > 1, that many fresh processes one after another: the median, and all of
    them as "samples_mb" (the heap glibc keeps differs from process to process by a few MiB)."""
    values = []
    for _ in range(samples):
        result = _peak_in_fresh_process(case, timeout, freed_returned)
        if "error" in result:
            return result
        values.append(result["peak_extra_mb"])
    if samples == 1:
        return {"peak_extra_mb": values[0]}
    return {"peak_extra_mb": round(statistics.median(values), 1), "samples_mb": values}


_RELATION_SCOPE = "rsp_d2.relation"


@contextlib.contextmanager
def _relation_in_scope():
    """Within: every relation call of the extractors runs in the profiler scope
    ``_RELATION_SCOPE``; yields the list that collects, per call, the name of the autograd node
    it returns (its backward shows as ``evaluate_function: <name>``; None without autograd)."""
    nodes: List[Optional[str]] = []
    run_rse = rse_extractor.run_rse

    def scoped(*args, **kwargs):
        with record_function(_RELATION_SCOPE):
            out = run_rse(*args, **kwargs)
        nodes.append(out.grad_fn.name() if out.grad_fn is not None else None)
        return out

    with mock.patch.object(rse_extractor, "run_rse", scoped):
        yield nodes


def relation_share(case: Dict, calls: int = 3) -> Optional[Dict]:
    """How much of a CPU head case's wall time its relation takes: forward (the extractors'
    calls) and, in a training step, the backward of the autograd node each call returns. The
    case runs once to warm up, then `calls` times under ``torch.profiler`` (CPU activity), each
    call timed whole with ``time.perf_counter``.

    Returns:
        {"relation_ms", "call_ms", "share"}: medians over the calls of the relation's time, of
        the whole call's time (profiled) and of their ratio. None for a head without relation,
        on CUDA (the profiler's CPU times would be kernel launches), and for an implementation
        whose backward is not one autograd node of its own (``export``, ``reference``: their
        last op's node type also occurs elsewhere in the head, so it cannot be attributed).
    """
    from .benchmark_cases import build_case

    if case.get("device", "cpu") != "cpu":
        return None
    run = build_case(case)
    run()
    ratios, relation, whole = [], [], []
    for _ in range(calls):
        with _relation_in_scope() as nodes, profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            run()
            elapsed = time.perf_counter() - t0
        if not nodes:
            return None
        backward = {f"autograd::engine::evaluate_function: {n}" for n in nodes if n}
        events = [e for e in prof.events() if e.name == _RELATION_SCOPE or e.name in backward]
        if sum(e.name in backward for e in events) != sum(n is not None for n in nodes):
            return None  # a node type that is not the relation's alone
        spent = sum(e.cpu_time_total for e in events) / 1e6
        ratios.append(spent / elapsed)
        relation.append(spent)
        whole.append(elapsed)
    mid = sorted(range(calls), key=lambda i: ratios[i])[calls // 2]
    return {"relation_ms": round(relation[mid] * 1e3, 1), "call_ms": round(whole[mid] * 1e3, 1),
            "share": round(ratios[mid], 4)}
