"""Guard's metadata is in pyproject.toml; this file adds two small C extensions, both optional: without a C
compiler Guard installs and works, the sealer checks an event's numbers in Python, and the strict JSON reader
uses its Python object hook."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("guard.audit._canon", ["guard/audit/_canon.c"], extra_compile_args=["-O3"],
                             optional=True),
                   Extension("guard.apis._strictjson", ["guard/apis/_strictjson.c"], extra_compile_args=["-O3"],
                             optional=True)])
