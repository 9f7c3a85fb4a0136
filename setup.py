"""Setuptools shim: metadata lives in setup.cfg.

The twistd plugins live in ``twisted/plugins/`` (no ``__init__.py``: it extends
Twisted's own ``twisted.plugins`` package), so they are listed as a package of
their own to land in ``site-packages/twisted/plugins`` on a normal install.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"])
    + ["twisted.plugins"],
)
