"""Builds ``ext/_targeting.pyx`` into ``pingpost._targeting`` on every ``pip install``.

Everything else about the package lives in pyproject.toml; this file exists because the
Cython extension has to be declared in code. ``PINGPOST_ANNOTATE=1`` also writes
``ext/_targeting.html`` (``cython -a``): yellow lines are where the hot path still talks
to the Python runtime.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

targeting = Extension("pingpost._targeting", ["ext/_targeting.pyx"], extra_compile_args=["-O3"])
annotate = os.environ.get("PINGPOST_ANNOTATE") == "1"

# force: an up-to-date ext/_targeting.c would otherwise skip Cython and write no annotation.
setup(ext_modules=cythonize([targeting], annotate=annotate, force=annotate,
                            compiler_directives={"language_level": 3}))
