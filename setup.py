#!/usr/bin/env python
"""Install rsp_d2 (``pip install -e . --no-build-isolation``, after torch).

The fused CPU kernels of the relation (rsp_d2/layers/csrc) are compiled here as ``rsp_d2._C``,
as Detectron2 compiles its own ops. The extension is optional: if it cannot be built (no C++
compiler, torch not importable at build time, a compile error), the package still installs,
with a warning, and ``rse_attention(impl="auto")`` falls back to the pure-PyTorch ``chunked``
implementation. Set RSP_D2_NO_EXT=1 to skip it deliberately.
"""
import hashlib
import os
import re
import shutil
import sysconfig
import warnings

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
EXT_SOURCE = "rsp_d2/layers/csrc/rse_cpp.cpp"


def source_sha(path: str) -> str:
    """Hash compiled into the extension; rsp_d2/layers/rse_cpp.py compares it with the source
    next to it, so a binary left over from an older source is never used."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def remove_built_extension():
    """A binary from an earlier build must not outlive a build that skips or fails it. Only this
    interpreter's (its EXT_SUFFIX): a checkout shared by two stacks (.venv, .venv-latest) keeps
    the other Python's build."""
    old = os.path.join(HERE, "rsp_d2", "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    if os.path.exists(old):
        os.remove(old)


def torch_openmp():
    """(compile args, link args) that run the kernels' threads on torch's own OpenMP pool: torch's
    pool threads spin a while after each of torch's parallel ops, so threads of the extension's
    own would share the cores with them. The bundled runtime (torch/lib/libgomp*.so*) is linked
    by its file, so the extension names its soname, which the dynamic loader finds already
    loaded by ``import torch``: one runtime, one pool. ([], []) where torch's parallel backend is
    not OpenMP, it bundles no GNU OpenMP runtime, or the compiler is not GCC (clang's -fopenmp
    would need its own runtime); the kernels then start threads of their own."""
    import glob
    import subprocess
    import sys

    import torch

    if (not sys.platform.startswith("linux")
            or "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info()):
        return [], []
    try:
        version = subprocess.run([os.environ.get("CXX", "c++"), "--version"], capture_output=True,
                                 text=True).stdout
    except OSError:
        return [], []
    if "Free Software Foundation" not in version:  # GCC says so; clang does not
        return [], []
    runtime = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")))
    if len(runtime) != 1:
        return [], []
    return ["-fopenmp"], [runtime[0]]


def extensions():
    if os.environ.get("RSP_D2_NO_EXT") == "1":
        remove_built_extension()
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # torch must be installed first (--no-build-isolation)
        warnings.warn("rsp_d2: torch is not importable at build time; rsp_d2._C not built")
        return [], {}
    if not shutil.which(os.environ.get("CXX", "c++")):
        warnings.warn("rsp_d2: no C++ compiler found; rsp_d2._C not built")
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        def run(self):
            remove_built_extension()
            try:
                super().run()
            except Exception as e:  # noqa: BLE001 - any build failure leaves the fallback
                warnings.warn(f"rsp_d2: building rsp_d2._C failed ({e}); the relation "
                              "falls back to pure PyTorch (impl='chunked')")

    omp_compile, omp_link = torch_openmp()
    ext = CppExtension(
        "rsp_d2._C",
        [EXT_SOURCE],
        extra_compile_args=["-O3", f'-DRSP_SOURCE_SHA="{source_sha(os.path.join(HERE, EXT_SOURCE))}"',
                            *omp_compile],
        extra_link_args=omp_link,
        optional=True,  # a compile error warns instead of failing the install
    )
    return [ext], {"build_ext": OptionalBuildExtension.with_options(use_ninja=False)}


def version() -> str:
    """The one version: rsp_d2/__init__.py's ``__version__`` (read, not imported: importing the
    package needs Detectron2, which a build environment may lack)."""
    with open(os.path.join(HERE, "rsp_d2", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def link_configs():
    """Ship configs/ inside the package as rsp_d2/model_zoo/configs (found by
    rsp_d2.model_zoo.get_config_file), as Detectron2 ships its model zoo's: a link in the source
    tree, whose files the wheel copies."""
    link = os.path.join(HERE, "rsp_d2", "model_zoo", "configs")
    if not os.path.exists(link):
        try:
            os.symlink(os.path.join("..", "..", "configs"), link)
        except OSError:  # no symlinks here: a copy
            shutil.copytree(os.path.join(HERE, "configs"), link)


ext_modules, cmdclass = extensions()
link_configs()

# detectron2 is deliberately not listed: it has no official PyPI release, and users who built
# it from source must not get a second copy. requirements.txt pins the tested stack.
setup(
    name="rsp_d2",
    version=version(),
    description="RSP head (Relational Semantics Propagator, Bai et al. RA-L 2021) for Detectron2",
    packages=find_packages(include=["rsp_d2", "rsp_d2.*"]),
    package_data={"rsp_d2.model_zoo": [f"configs/{d}*.{ext}" for d in ("", "**/")
                                       for ext in ("yaml", "py")]},
    python_requires=">=3.8",
    install_requires=["torch>=1.10", "fvcore", "numpy"],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
