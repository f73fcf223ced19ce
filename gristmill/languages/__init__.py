"""The language seam: each folder of `runtimes/` is a language the core discovers.

The core never names a language. A language folder holds `runtime.toml` (what to
run, which files, which conventions), its wrapper as a real source file in that
language, an `example` job, and optionally `language.py`, a `LanguagePlugin`
subclass for what only Python code can say about it (parsing parameters,
encoding arguments).
"""

from gristmill.languages.plugin import LanguagePlugin
from gristmill.languages.registry import Registry, Runtime
from gristmill.languages.spec import RuntimeSpec

__all__ = ["LanguagePlugin", "Registry", "Runtime", "RuntimeSpec"]
