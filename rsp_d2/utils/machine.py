"""What machine a number comes from: CPU model and ISA flags, read once per process.

Floats differ across CPU types (oneDNN picks other kernels on AVX-512 than on AVX2), so every
timing and every accuracy run records :func:`cpu_model`, and runs of different models are
never paired.
"""
import platform
from typing import FrozenSet

__all__ = ["cpu_flags", "cpu_model"]


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
