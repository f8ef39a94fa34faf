#!/usr/bin/env python
from setuptools import find_packages, setup

# detectron2 is deliberately not listed: it has no official PyPI release, and users who built
# it from source must not get a second copy. requirements.txt pins the tested stack.
setup(
    name="rsp_d2",
    version="0.1.0",
    description="RSP head (Relational Semantics Propagator, Bai et al. RA-L 2021) for Detectron2",
    packages=find_packages(include=["rsp_d2", "rsp_d2.*"]),
    python_requires=">=3.8",
    install_requires=["torch>=1.10", "fvcore", "numpy"],
)
