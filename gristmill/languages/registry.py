"""Discovers the languages in `runtimes/` and pairs each with its sandbox profile."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gristmill.errors import LanguageUnavailable, UnknownLanguage
from gristmill.isolation.profile import SandboxProfile, load_profile
from gristmill.languages.plugin import LanguagePlugin
from gristmill.languages.spec import RuntimeSpec, load_spec
from gristmill.resources import PROFILES_DIR, RUNTIMES_DIR

# The checkout's root (the tests' fixtures live there); the data folders are found by
# gristmill.resources, which also knows an installed package's copies.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Runtime:
    spec: RuntimeSpec
    plugin: LanguagePlugin
    profile: SandboxProfile

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def missing(self) -> tuple[str, ...]:
        """Required host paths that are absent: the language cannot run while any is."""
        return tuple(path for path in self.spec.requires if not Path(path).exists())

    @property
    def available(self) -> bool:
        return not self.missing

    @functools.cached_property
    def toolchain_version(self) -> str:
        if not self.available:
            return ""
        try:
            done = subprocess.run(
                self.spec.version_command, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"unknown ({error})"
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else "unknown"


def _load_plugin(folder: Path) -> LanguagePlugin:
    """The folder's `language.Plugin`, the folder loaded as a package of its own so that
    `language.py` may import its siblings (`from .dependencies import ...`)."""
    if not (folder / "language.py").exists():
        return LanguagePlugin()
    package_name = f"gristmill_runtime_{folder.name}"
    package_spec = importlib.util.spec_from_loader(package_name, loader=None, is_package=True)
    assert package_spec is not None and package_spec.submodule_search_locations is not None
    package_spec.submodule_search_locations.append(str(folder))
    # A registry loads its folders afresh, even when another loaded one of that name.
    for stale in [name for name in sys.modules if name.startswith(f"{package_name}.")]:
        del sys.modules[stale]
    sys.modules[package_name] = importlib.util.module_from_spec(package_spec)
    module = importlib.import_module(f"{package_name}.language")
    plugin: LanguagePlugin = module.Plugin()
    return plugin


def language_folders(runtimes_dir: Path) -> list[Path]:
    """The folders of `runtimes_dir` that are languages: each with a runtime.toml, but
    none whose name starts with `_` (`_template`, a new language's minimum, is a model
    to copy, never served)."""
    return [
        manifest.parent
        for manifest in sorted(runtimes_dir.glob("*/runtime.toml"))
        if not manifest.parent.name.startswith("_")
    ]


class Registry:
    """Every language found under `runtimes_dir`, by name."""

    def __init__(
        self,
        runtimes_dir: Path = RUNTIMES_DIR,
        profiles_dir: Path = PROFILES_DIR,
    ) -> None:
        self.runtimes_dir, self.profiles_dir = runtimes_dir, profiles_dir
        self._runtimes: dict[str, Runtime] = {}
        for folder in language_folders(runtimes_dir):
            spec = load_spec(folder)
            self._runtimes[spec.name] = Runtime(
                spec=spec,
                plugin=_load_plugin(folder),
                profile=load_profile(profiles_dir, spec.name),
            )

    def __iter__(self) -> Iterator[Runtime]:
        return iter(self._runtimes.values())

    def names(self) -> list[str]:
        return sorted(self._runtimes)

    def get(self, language: str, field: str = "job.language") -> Runtime:
        """The runtime for `language`, or a typed error a caller can show as it is
        (naming the request's `field` when the language is unknown)."""
        runtime = self._runtimes.get(language)
        if runtime is None:
            raise UnknownLanguage(language, self.names(), field)
        if not runtime.available:
            raise LanguageUnavailable(
                f"{language} is not available here: missing {', '.join(runtime.missing)}"
            )
        return runtime

    def for_extension(self, suffix: str) -> Runtime | None:
        return next((r for r in self._runtimes.values() if suffix in r.spec.extensions), None)
