"""The build steps pyproject.toml cannot declare: generated protobuf code and the data folders.

A wheel must work outside the checkout, so its build (never an editable install, where
`make proto` and the checkout serve) generates `gristmill/v1/` from `proto/` with the
pinned grpcio-tools of `[build-system]`, and copies `runtimes/` and `sandbox/` into
`gristmill/_data/`, where gristmill.resources finds them.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO = "gristmill/v1/runtime.proto"
# Packaged name -> the checkout's folder (the same table as gristmill/resources.py, which
# a build cannot import: its dependencies are not installed yet).
DATA = {"runtimes": "runtimes", "sandbox": "sandbox"}


class BuildPyWithGenerated(build_py):
    """build_py, then the generated code and the data folders into the build tree."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        package = Path(self.build_lib) / "gristmill"
        self._generate(Path(self.build_lib))
        for name, source in DATA.items():
            target = package / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(
                ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )

    def _generate(self, out: Path) -> None:
        from grpc_tools import protoc  # a build requirement only

        well_known = files("grpc_tools").joinpath("_proto")
        args = [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / "proto" / PROTO),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on proto/{PROTO}")
        (out / "gristmill" / "v1" / "__init__.py").touch()


setup(cmdclass={"build_py": BuildPyWithGenerated})
