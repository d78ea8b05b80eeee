"""Builds the emulator's compiled kernels (targets/emulator/kernels.c); everything else is in pyproject.toml.

The kernels are a plain C library loaded through ctypes, so they need no Python headers at run time. The
build is optional: without a C compiler spikedeploy still installs and the emulator uses its numpy path
(`spikedeploy doctor` says which one is active).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -fno-trapping-math lets GCC vectorise trunc/floor; the kernels only do exact integer-valued arithmetic
FAST = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math"]
PORTABLE = ["-O3", "-fno-math-errno", "-fno-trapping-math"]


class BuildKernels(build_ext):
    """-march=native where the compiler accepts it (the library is built on the machine that runs it)."""

    def build_extension(self, ext):
        for flags in (FAST, PORTABLE):
            ext.extra_compile_args = flags
            try:
                return super().build_extension(ext)
            except Exception as e:  # noqa: BLE001 - any compiler failure: try the next flags, then give up
                print(f"spikedeploy: building {ext.name} with {' '.join(flags)} failed: {e}")
        print("spikedeploy: no compiled kernels; the emulator will use numpy only")


setup(
    ext_modules=[Extension("spikedeploy.targets.emulator._kernels", ["targets/emulator/kernels.c"],
                           optional=True)],
    cmdclass={"build_ext": BuildKernels},
)
