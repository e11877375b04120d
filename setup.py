"""Guard's metadata is in pyproject.toml; this file adds the one C extension, which is optional: without a
C compiler Guard installs and works, and `guard audit verify` checks signatures one by one."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("guard.audit._ed25519_batch", ["guard/audit/_ed25519_batch.c"],
                             extra_compile_args=["-O3"], optional=True)])
