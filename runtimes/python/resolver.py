"""uv as the Python resolver: `uv pip compile` with hashes, `uv pip install` of exactly that.

Jobs run on Debian's /usr/bin/python3, so that is the interpreter both steps resolve
and install for. An environment is a `--target` directory, `site-packages/`, that the
wrapper adds to `sys.path`; its bytecode is compiled at install time, because jobs see
it read-only and would otherwise compile every module on every run.

Both steps take wheels only (`--only-binary :all:`) unless the service allows source
builds: building an sdist runs its code in the resolve sandbox, where uv's download
cache, shared by every job, is writable. The install step reads a requirements file
rendered from the checked pins of the lockfile (`lockfile.requirements_txt`), never the
caller's text itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from gristmill.languages import Dependency, Lockfile, Step, ToolContext
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.lockfiles import LockfileRefused

from .dependencies import PYTHON
from .lockfile import REQUIREMENTS_TXT, requirements_txt

INTERPRETER = "/usr/bin/python3"
REQUIREMENTS_IN = "requirements.in"
SITE_PACKAGES = "site-packages"
"""The environment's directory of packages; the wrapper adds `<environment>/site-packages`."""

# Plain lines on stderr (no colours or spinners): they are the job's progress and errors.
_ENV = {"NO_COLOR": "1", "UV_NO_PROGRESS": "1", "UV_PYTHON_DOWNLOADS": "never"}


def _check_python(requirement: Dependency, toolchain_version: str) -> None:
    """Refuses a script whose `requires-python` the jobs' interpreter does not meet."""
    specifier = SpecifierSet(requirement.requirement.removeprefix(PYTHON))
    try:
        version = Version(toolchain_version.split()[-1])
    except (InvalidVersion, IndexError):
        return
    if version not in specifier:
        raise DependencyFailure(
            f"the script requires Python {specifier} ({requirement.where}); "
            f"jobs here run {toolchain_version}"
        )


class Uv:
    name: str = "uv"
    lock_format: str = REQUIREMENTS_TXT
    programs: tuple[str, ...] = ("uv",)

    def version_argv(self, program_path: str) -> Sequence[str]:
        return (program_path, "--version")

    def _options(self, context: ToolContext) -> list[str]:
        options = ["--python", INTERPRETER, "--cache-dir", context.cache_dir, "--no-config"]
        for index, url in enumerate(context.index_urls):
            options += ["--default-index" if index == 0 else "--index", url]
        if context.system_certs:
            options.append("--system-certs")
        if not context.allow_source_builds:
            options += ["--only-binary", ":all:"]
        return options

    def check_lockfile(self, content: str) -> None:
        """Only hash-pinned packages of the index (`requirements_txt`)."""
        requirements_txt(content)

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        requirements = []
        for dependency in dependencies:
            if dependency.name == PYTHON:
                _check_python(dependency, context.toolchain_version)
            else:
                requirements.append(dependency.requirement)
        argv = [f"{context.tools_dir}/uv", "pip", "compile", "--generate-hashes", "--no-header"]
        argv += [*self._options(context), REQUIREMENTS_IN]
        return Step(
            argv=tuple(argv),
            files={REQUIREMENTS_IN: "".join(f"{r}\n" for r in requirements)},
            env=_ENV,
            stdout_is_result=True,
        )

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        try:
            pins = requirements_txt(lockfile.content)
        except LockfileRefused as refused:
            raise DependencyFailure(f"the lockfile: {refused}") from refused
        argv = [f"{context.tools_dir}/uv", "pip", "install", "--require-hashes", "--no-deps"]
        # Copies, not links into the shared download cache: an environment never changes.
        argv += ["--compile-bytecode", "--link-mode", "copy"]
        argv += ["--target", f"{context.build_dir}/{SITE_PACKAGES}", *self._options(context)]
        argv += ["--requirement", REQUIREMENTS_TXT]
        rendered = "".join(pin.render() for pin in pins)
        return Step(argv=tuple(argv), files={REQUIREMENTS_TXT: rendered}, env=_ENV)
