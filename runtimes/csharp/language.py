"""What only Python code can say about C# jobs (placeholder, completed below)."""

from __future__ import annotations

from gristmill.languages.plugin import LanguagePlugin


class Plugin(LanguagePlugin):
    pass
