"""``python -m rsp_d2.collect_env``: the environment, for bug reports.

Prints Detectron2's ``collect_env`` table (Python, torch, CUDA, compiler, GPUs, ...), then
rsp_d2's: its version and location, how the C++ extension ``rsp_d2._C`` was built (loaded or
why not, source hash, AVX2+FMA or baseline-ISA loops on this CPU), the relation
implementations registered (rsp_d2/layers/rse_backends.py, in ``impl="auto"`` order), which ones
run on each visible device and dtype (the first one is what ``impl="auto"`` picks) and why the
others do not, and a short self-test of each available implementation against the unfold
reference: forward + backward on a small random problem, max relative error and time
(rsp_d2/layers/rse_selfcheck.py). Everything about the implementations is read from the registry.
"""
import argparse
import os
import sys
from typing import List, Tuple

import torch

from .utils.machine import cpu_model

__all__ = ["collect_rsp_env_info", "collect_env_info", "main"]

_DTYPES = {"cpu": (torch.float32, torch.bfloat16),
           "cuda": (torch.float32, torch.bfloat16, torch.float16)}


def _table(rows: List[Tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _rsp_version() -> str:
    import rsp_d2

    try:
        from importlib.metadata import version

        installed = version("rsp_d2")
    except Exception:  # noqa: BLE001 - a checkout on sys.path without an install
        installed = "not installed"
    return f"{installed} @ {os.path.dirname(rsp_d2.__file__)}"


def _extension_rows() -> List[Tuple[str, str]]:
    from .layers import rse_cpp

    if rse_cpp.HAS_CPP_EXT:
        return [("rsp_d2._C", f"loaded from {rse_cpp._C.__file__}"),
                ("rsp_d2._C source hash", f"{rse_cpp._C.source_sha} (matches the source: ok)"),
                ("rsp_d2._C loops", f"{rse_cpp.cpu_isa()} (compiled for: "
                                    f"{', '.join(rse_cpp._C.available_isas())} on this CPU)"),
                ("rsp_d2._C threads", rse_cpp.cpu_thread_pool()),
                ("rsp_d2._C map dtypes", ", ".join(rse_cpp._C.map_dtypes())
                 + " (bfloat16 read as it is, summed in float32)"),
                ("CPU", cpu_model())]
    from .layers import available_rse_impls

    auto = available_rse_impls(torch.empty(1, 1, 1, 1))[0]
    return [("rsp_d2._C", f"unavailable: {rse_cpp.CPP_EXT_ERROR}; 'auto' uses {auto!r} on CPU")]


def _devices() -> List[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return devices


def _impl_rows(self_test: bool) -> List[Tuple[str, str]]:
    from .layers import get_rse_impl, rse_impl_names, rse_impls
    from .layers.rse_selfcheck import selfcheck_device_types, selfcheck_impl

    rows = [("relation implementations", ", ".join(rse_impl_names()) + "  ('auto' order)"),
            ("auto self-check on", ", ".join(selfcheck_device_types()) or "off")]
    reference = get_rse_impl("reference")  # the yardstick: the definition itself
    for device in _devices():
        for dtype in _DTYPES[device.type]:
            probe = torch.empty(1, 1, 1, 1, device=device, dtype=dtype)
            why_not = {i.name: i.why_not(probe) for i in rse_impls()}
            where = f"{device} {str(dtype).replace('torch.', '')}"
            rows.append((f"available, {where}", ", ".join(n for n, w in why_not.items() if not w)))
            rows.append(("  not available", "; ".join(f"{n}: {w}" for n, w in why_not.items() if w)
                         or "-"))
            if not self_test:
                continue
            for impl in rse_impls():
                if impl is reference or why_not[impl.name]:
                    continue
                r = selfcheck_impl(impl, device, dtype, baseline=reference)
                verdict = "ok" if r.ok else f"FAILED: {r.reason}"
                rows.append((f"  self-test {impl.name}",
                             f"max rel. error {r.max_error:.2e} (tol {r.tolerance:g}), "
                             f"fwd+bwd {1e3 * r.seconds:.2f} ms, {verdict}"))
    return rows


def collect_rsp_env_info(self_test: bool = True) -> str:
    """rsp_d2's part of the report (a table of "key  value" lines)."""
    rows = [("rsp_d2", _rsp_version())]
    rows += _extension_rows()
    rows += _impl_rows(self_test)
    return _table(rows)


def _detectron2_info() -> str:
    try:
        from detectron2.utils.collect_env import collect_env_info as d2_collect_env_info
    except Exception as e:  # noqa: BLE001 - rsp_d2.layers works without detectron2
        return _table([("sys.platform", sys.platform),
                       ("Python", sys.version.replace("\n", "")),
                       ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
                       ("detectron2", f"not importable ({type(e).__name__}: {e})")])
    return d2_collect_env_info()


def collect_env_info(self_test: bool = True) -> str:
    """Detectron2's ``collect_env_info()`` followed by :func:`collect_rsp_env_info`."""
    return _detectron2_info() + "\n" + collect_rsp_env_info(self_test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsp_d2.collect_env", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-self-test", action="store_true",
                        help="skip running each implementation against the reference")
    args = parser.parse_args(argv)
    print(collect_env_info(self_test=not args.no_self_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
