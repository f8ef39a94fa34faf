"""What machine a number comes from: CPU model and ISA flags, read once per process.

Floats differ across CPU types (oneDNN picks other kernels on AVX-512 than on AVX2), so every
timing and every accuracy run records :func:`cpu_model`, and runs of different models are
never paired. The model name alone does not tell the types apart (virtual machines of two AMD
EPYC generations, one with AVX2 only and one with AVX-512, both say "AMD EPYC"), so the
identity also holds the CPU family, model and stepping and the vector extensions.
"""
import platform
from typing import Dict, FrozenSet, Optional

__all__ = ["cpu_flags", "cpu_model", "cpu_vector_isa"]


def _first_cpu(cpuinfo: Optional[str] = None) -> Dict[str, str]:
    """The fields of the first processor of `cpuinfo` (default: ``/proc/cpuinfo``; {} where
    there is none)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return {}
    fields: Dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: Optional[str] = None) -> str:
    """The CPU type runs are recorded and paired by, e.g. "AMD EPYC (family 26, model 2,
    stepping 1; AVX512-BF16, AVX-512F, AVX2, FMA)": the model name, its family / model /
    stepping and its vector extensions (``/proc/cpuinfo`` or `cpuinfo`'s text; the processor
    name of ``platform`` elsewhere)."""
    fields = _first_cpu(cpuinfo)
    name = fields.get("model name") or platform.processor() or "unknown"
    ids = [f"{label} {fields[key]}" for key, label in
           (("cpu family", "family"), ("model", "model"), ("stepping", "stepping")) if key in fields]
    isa = _vector_extensions(frozenset(fields.get("flags", "").split()))
    detail = "; ".join(filter(None, [", ".join(ids), ", ".join(isa)]))
    return f"{name} ({detail})" if detail else name


def cpu_flags() -> FrozenSet[str]:
    """The CPU's ISA flags (``/proc/cpuinfo``'s ``flags``; empty where there is none)."""
    return frozenset(_first_cpu().get("flags", "").split())


# The vector extensions that decide which kernels run (oneDNN's and rsp_d2._C's), widest first.
_VECTOR_FLAGS = [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512F"),
                 ("avx2", "AVX2"), ("fma", "FMA")]


def _vector_extensions(flags: FrozenSet[str]):
    """The names of the extensions of _VECTOR_FLAGS among `flags`, widest first."""
    return [name for flag, name in _VECTOR_FLAGS if flag in flags]


def cpu_vector_isa() -> str:
    """The CPU's vector extensions that matter for the kernels, e.g. "AVX2, FMA; no AMX-BF16,
    AVX512-BF16, AVX-512F" ("unknown" without ``/proc/cpuinfo`` flags)."""
    flags = cpu_flags()
    if not flags:
        return f"unknown ({platform.machine()})"
    has = _vector_extensions(flags)
    lacks = [name for flag, name in _VECTOR_FLAGS if flag not in flags]
    return ", ".join(has or ["none of AVX2/AVX-512"]) + ("; no " + ", ".join(lacks) if lacks else "")
