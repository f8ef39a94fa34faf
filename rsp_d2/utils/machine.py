"""What machine a number comes from: CPU model and ISA flags, read once per process.

Floats differ across CPU types (oneDNN picks other kernels on AVX-512 than on AVX2), so every
timing and every accuracy run records :func:`cpu_model`, and runs of different models are
never paired.
"""
import platform
from typing import FrozenSet

__all__ = ["cpu_flags", "cpu_model", "cpu_vector_isa"]


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> FrozenSet[str]:
    """The CPU's ISA flags (``/proc/cpuinfo``'s ``flags``; empty where there is none)."""
    return frozenset(_cpuinfo_field("flags").split())


# The vector extensions that decide which kernels run (oneDNN's and rsp_d2._C's), widest first.
_VECTOR_FLAGS = [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512F"),
                 ("avx2", "AVX2"), ("fma", "FMA")]


def cpu_vector_isa() -> str:
    """The CPU's vector extensions that matter for the kernels, e.g. "AVX2, FMA; no AMX-BF16,
    AVX512-BF16, AVX-512F" ("unknown" without ``/proc/cpuinfo`` flags)."""
    flags = cpu_flags()
    if not flags:
        return f"unknown ({platform.machine()})"
    has = [name for flag, name in _VECTOR_FLAGS if flag in flags]
    lacks = [name for flag, name in _VECTOR_FLAGS if flag not in flags]
    return ", ".join(has or ["none of AVX2/AVX-512"]) + ("; no " + ", ".join(lacks) if lacks else "")
