#!/usr/bin/env python
"""Install rsp_d2 (``pip install -e . --no-build-isolation``, after torch).

The fused CPU kernels of the relation (rsp_d2/layers/csrc) are compiled here as ``rsp_d2._C``,
as Detectron2 compiles its own ops. The extension is optional: if it cannot be built (no C++
compiler, or torch not importable at build time), the package still installs and
``rse_attention(impl="auto")`` falls back to the pure-PyTorch ``chunked`` implementation.
Set RSP_D2_NO_EXT=1 to skip it deliberately.
"""
import os

from setuptools import find_packages, setup


def extensions():
    if os.environ.get("RSP_D2_NO_EXT") == "1":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # torch must be installed first (--no-build-isolation)
        return [], {}
    ext = CppExtension(
        "rsp_d2._C",
        ["rsp_d2/layers/csrc/rse_cpu.cpp"],
        extra_compile_args=["-O3"],
        optional=True,  # a failed build warns instead of failing the install
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=False)}


ext_modules, cmdclass = extensions()

# detectron2 is deliberately not listed: it has no official PyPI release, and users who built
# it from source must not get a second copy. requirements.txt pins the tested stack.
setup(
    name="rsp_d2",
    version="0.1.0",
    description="RSP head (Relational Semantics Propagator, Bai et al. RA-L 2021) for Detectron2",
    packages=find_packages(include=["rsp_d2", "rsp_d2.*"]),
    python_requires=">=3.8",
    install_requires=["torch>=1.10", "fvcore", "numpy"],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
