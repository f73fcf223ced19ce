"""Conformance cases: the TOML files of `gristmill/conformance/suite/`, loaded and validated.

The case files are data that anyone may read and extend, for any server speaking the
contract. This module is the one place that knows their schema (documented in
`gristmill/conformance/suite/README.md`), so that a typo in a file is an error naming the file,
the case and the key, never a case that silently checks less than it says.

A case written for several languages (`code.<language> = "..."`) is expanded here
into one `Case` per language; everything downstream sees single-language cases.

A language's folder carries its own cases (`runtimes/<lang>/conformance.toml`): full
`[[case]]` tables (their `language` defaults to the folder's), and `[[translation]]`
tables that give a shared case's code in that language and take everything else (args,
limits, tags, expectations) from the shared case, so that adding a language never
edits the shared files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gristmill.conformance.expectations import Expectation, merge_expect, parse_expect
from gristmill.conformance.fields import (
    CaseFileError,
    Where,
    get_table,
    only_keys,
    optional_bool,
    optional_int,
    optional_str,
    read_toml,
    required_str,
    string_list,
    string_table,
)

__all__ = [
    "PLACEHOLDERS",
    "Case",
    "CaseFileError",
    "CaseLimits",
    "Expectation",
    "coverage",
    "load_case_file",
    "load_cases",
    "load_language_cases",
    "not_applicable",
]

PLACEHOLDERS = ("{service_host}", "{service_port}")
"""Tokens in a case's code replaced with the address of the server under test."""

KNOWN_NEEDS = frozenset({"service_port"})

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_CASE_KEYS = frozenset(
    {
        "name",
        "language",
        "code",
        "args",
        "args_json",
        "env",
        "stdin",
        "output_files",
        "context",
        "script",
        "limits",
        "entry_point",
        "cancel_after_ms",
        "needs",
        "tags",
        "partner",
        "expect",
        "expect_for",
    }
)
KNOWN_TAGS = frozenset({"attack"})
"""`attack`: the case attacks the sandbox; the report counts attacks tried and contained."""
_LIMIT_KEYS = frozenset(
    {
        "wall_time_ms",
        "memory_bytes",
        "cpu_time_ms",
        "processes",
        "output_bytes",
        "network",
        "cpu_millicores",
        "network_bytes",
        "network_connections",
    }
)


@dataclass(frozen=True)
class CaseLimits:
    """The job's limits as sent; zero asks for the server's default."""

    wall_time_ms: int = 0
    memory_bytes: int = 0
    cpu_time_ms: int = 0
    processes: int = 0
    output_bytes: int = 0
    network: bool = False
    cpu_millicores: int = 0
    network_bytes: int = 0
    network_connections: int = 0


@dataclass(frozen=True)
class Case:
    """One case in one language: a job to send and what its outcome must show."""

    name: str
    language: str
    code: str
    expect: Expectation
    source: Path
    # Sent as the Struct `args` (numbers travel as doubles) ...
    args: Mapping[str, Any] | None = None
    # ... or as `args_json` text, exact (integers over 2^53, null).
    args_json: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str = ""
    output_files: tuple[str, ...] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    # Run as a plain script with this argv (`Job.script`); None: call the entry point.
    script: tuple[str, ...] | None = None
    limits: CaseLimits = CaseLimits()
    entry_point: str = ""
    cancel_after_ms: int | None = None
    needs: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    # A second job in the same language, run at the same time as this one; it must
    # succeed. For attacks of one job on another (processes, files, IPC, sockets).
    partner: str | None = None

    @property
    def is_attack(self) -> bool:
        return "attack" in self.tags

    @property
    def id(self) -> str:
        """A stable, readable name for this case in this language."""
        return f"{self.name}[{self.language}]"


def load_cases(directory: Path, language_files: Sequence[Path] = ()) -> list[Case]:
    """Every case of every `*.toml` file in `directory`, in file order then case order,
    then those of each language's own file (`load_language_cases`)."""
    if not directory.is_dir():
        raise CaseFileError(f"{directory}: no such directory of case files")
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        raise CaseFileError(f"{directory}: no *.toml case files")
    shared: dict[str, dict[str, Any]] = {}
    loaded: list[Case] = []
    for path in paths:
        for raw in _raw_cases(path):
            if isinstance(raw.get("name"), str) and isinstance(raw.get("code"), dict):
                shared.setdefault(raw["name"], raw)
        loaded.extend(load_case_file(path))
    for path in language_files:
        loaded.extend(load_language_cases(path, shared))
    cases: list[Case] = []
    defined_in: dict[tuple[str, str], Path] = {}
    for case in loaded:
        key = (case.name, case.language)
        if key in defined_in:
            raise CaseFileError(
                f"{case.source}: case {case.name!r} for {case.language} is already defined "
                f"in {defined_in[key]}"
            )
        defined_in[key] = case.source
        cases.append(case)
    return cases


def load_language_cases(path: Path, shared: Mapping[str, Mapping[str, Any]]) -> list[Case]:
    """A language folder's `conformance.toml` (the language is the folder's name).

    `[[translation]]`: `name` of a shared multi-language case, `code`, and optionally
    `partner` (its partner's code, required when the shared case has partners) and
    `expect` (keys replacing the shared expectation for this language, as `expect_for`).
    `[[case]]`: a case of its own, as in the shared files, `language` defaulting.
    """
    language = path.parent.name
    data = read_toml(path)
    only_keys(data, frozenset({"case", "translation", "not_applicable"}), Where(path, (), ""))
    cases: list[Case] = []
    for index, raw in enumerate(data.get("translation", []), start=1):
        name = raw.get("name")
        label = f"translation {name!r}" if isinstance(name, str) else f"translation #{index}"
        where = Where(path, ("translation", index - 1), label)
        only_keys(raw, frozenset({"name", "code", "partner", "expect"}), where)
        if not isinstance(name, str) or name not in shared:
            raise CaseFileError(f"{where}: names no shared case written for several languages")
        base = {k: v for k, v in shared[name].items() if k not in {"expect_for", "partner"}}
        base["code"] = {language: required_str(raw, "code", where)}
        if "partner" in shared[name] or "partner" in raw:
            base["partner"] = {language: required_str(raw, "partner", where)}
        base["expect_for"] = {language: get_table(raw, "expect", where)}
        cases.extend(_parse_case(base, path, where))
    for index, raw in enumerate(data.get("case", []), start=1):
        name = raw.get("name")
        where = Where(path, ("case", index - 1), _label(name, index))
        if not isinstance(raw.get("code"), dict):
            raw = {"language": language, **raw}
        cases.extend(_parse_case(raw, path, where))
    return cases


def not_applicable(language_files: Sequence[Path]) -> dict[str, dict[str, str]]:
    """Per language: the shared cases that mean nothing in it, each with the reason
    (`[not_applicable]` of its `conformance.toml`: case name = "why")."""
    found: dict[str, dict[str, str]] = {}
    for path in language_files:
        table = get_table(read_toml(path), "not_applicable", str(path))
        for name, why in table.items():
            if not isinstance(why, str) or not why.strip():
                raise CaseFileError(f"{path}: not_applicable.{name} must give the reason")
        found[path.parent.name] = dict(table)
    return found


def coverage(
    cases: Sequence[Case],
    exempt: Mapping[str, Mapping[str, str]] | None = None,
    shared_dir: Path | None = None,
) -> dict[str, list[str]]:
    """Per language: the shared case names (those of `shared_dir`'s files, else all) that
    some language has and it lacks (the coverage matrix's holes), leaving out those it
    declares not applicable. A language's own cases in its folder are no one's hole."""
    by_language: dict[str, set[str]] = {}
    for case in cases:
        by_language.setdefault(case.language, set()).add(case.name)
    every = list(
        dict.fromkeys(
            case.name for case in cases if shared_dir is None or case.source.parent == shared_dir
        )
    )
    exempt = exempt or {}
    return {
        language: [n for n in every if n not in names and n not in exempt.get(language, {})]
        for language, names in sorted(by_language.items())
    }


def _raw_cases(path: Path) -> list[dict[str, Any]]:
    raw_cases = read_toml(path).get("case")
    return (
        [raw for raw in raw_cases if isinstance(raw, dict)] if isinstance(raw_cases, list) else []
    )


def _label(name: Any, index: int) -> str:
    return f"case {name!r}" if isinstance(name, str) else f"case #{index}"


def load_case_file(path: Path) -> list[Case]:
    """The cases of one file, expanded to one `Case` per language."""
    data = read_toml(path)
    only_keys(data, frozenset({"case"}), Where(path, (), ""))
    raw_cases = data.get("case")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseFileError(f"{path}: expected one or more [[case]] tables")
    cases: list[Case] = []
    for index, raw in enumerate(raw_cases, start=1):
        name = raw.get("name")
        where = Where(path, ("case", index - 1), _label(name, index))
        cases.extend(_parse_case(raw, path, where))
    return cases


def _parse_case(raw: dict[str, Any], path: Path, where: Where) -> list[Case]:
    only_keys(raw, _CASE_KEYS, where)
    name = required_str(raw, "name", where)
    if not _NAME.fullmatch(name):
        raise CaseFileError(f"{where}: name must match {_NAME.pattern}")
    codes = _parse_codes(raw, where)

    if "args" in raw and "args_json" in raw:
        raise CaseFileError(f"{where}: give args or args_json, not both")
    args = get_table(raw, "args", where) if "args" in raw else None
    args_json = _parse_args_json(raw, where)
    env = string_table(raw, "env", where)
    context = string_table(raw, "context", where)
    stdin = optional_str(raw, "stdin", where) or ""
    output_files = string_list(raw, "output_files", where) or ()
    script = string_list(raw, "script", where)
    limits = _parse_limits(raw, where)
    entry_point = optional_str(raw, "entry_point", where) or ""
    cancel_after_ms = optional_int(raw, "cancel_after_ms", where, minimum=1)
    needs = _parse_needs(raw, codes, where)
    tags = _parse_tags(raw, where)
    partners = _parse_partners(raw, codes, where)

    base_expect = get_table(raw, "expect", where)
    overrides = get_table(raw, "expect_for", where) if "expect_for" in raw else {}
    for language in overrides:
        if language not in codes:
            raise CaseFileError(f"{where}: expect_for.{language} names a language without code")

    cases = []
    for language, code in codes.items():
        expect_where = where.at(label=f" [{language}]")
        merged = merge_expect(base_expect, get_table(overrides, language, where, "expect_for."))
        cases.append(
            Case(
                name=name,
                language=language,
                code=code,
                expect=parse_expect(merged, expect_where),
                source=path,
                args=args,
                args_json=args_json,
                env=env,
                stdin=stdin,
                output_files=output_files,
                context=context,
                script=script,
                limits=limits,
                entry_point=entry_point,
                cancel_after_ms=cancel_after_ms,
                needs=needs,
                tags=tags,
                partner=partners.get(language),
            )
        )
    return cases


def _parse_codes(raw: dict[str, Any], where: Where) -> dict[str, str]:
    """`language` + `code` text, or a `code.<language>` table: the case once per language."""
    code = raw.get("code")
    if isinstance(code, str):
        language = required_str(raw, "language", where)
        codes = {language: code}
    elif isinstance(code, dict):
        if "language" in raw:
            raise CaseFileError(f"{where}: with a code.<language> table, leave out language")
        codes = {}
        for language, text in code.items():
            if not isinstance(text, str):
                raise CaseFileError(f"{where}: code.{language} must be a string")
            codes[language] = text
    else:
        raise CaseFileError(f"{where}: code must be a string (with language) or a table")
    if not codes:
        raise CaseFileError(f"{where}: code is empty")
    for language, text in codes.items():
        if not _NAME.fullmatch(language):
            raise CaseFileError(f"{where}: language {language!r} must match {_NAME.pattern}")
        if not text.strip():
            raise CaseFileError(f"{where}: the {language} code is empty")
    return codes


def _parse_args_json(raw: dict[str, Any], where: Where) -> str | None:
    text = optional_str(raw, "args_json", where)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CaseFileError(f"{where}: args_json is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise CaseFileError(f"{where}: args_json must be a JSON object")
    return text


def _parse_limits(raw: dict[str, Any], where: Where) -> CaseLimits:
    if "limits" not in raw:
        return CaseLimits()
    table = get_table(raw, "limits", where)
    only_keys(table, _LIMIT_KEYS, where.at("limits", label=": limits"))
    numbers = {
        key: optional_int(table, key, where, minimum=0, prefix="limits.") or 0
        for key in _LIMIT_KEYS - {"network"}
    }
    network = optional_bool(table, "network", where, prefix="limits.") or False
    return CaseLimits(network=network, **numbers)


def _parse_needs(raw: dict[str, Any], codes: Mapping[str, str], where: Where) -> frozenset[str]:
    """What the case needs of the runner; a placeholder without its need would stay literal."""
    needs_list = raw.get("needs", [])
    if not isinstance(needs_list, list) or not all(isinstance(n, str) for n in needs_list):
        raise CaseFileError(f"{where}: needs must be a list of strings")
    needs = frozenset(needs_list)
    if unknown := needs - KNOWN_NEEDS:
        raise CaseFileError(
            f"{where}: unknown needs {sorted(unknown)}; known: {sorted(KNOWN_NEEDS)}"
        )
    for language, code in codes.items():
        uses_placeholder = any(token in code for token in PLACEHOLDERS)
        if "service_port" in needs and not uses_placeholder:
            raise CaseFileError(
                f"{where}: needs service_port but the {language} code has no "
                f"{' or '.join(PLACEHOLDERS)}"
            )
        if uses_placeholder and "service_port" not in needs:
            raise CaseFileError(
                f"{where}: the {language} code uses a placeholder; add needs = ['service_port']"
            )
    return needs


def _parse_tags(raw: dict[str, Any], where: Where) -> frozenset[str]:
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CaseFileError(f"{where}: tags must be a list of strings")
    if unknown := set(tags) - KNOWN_TAGS:
        raise CaseFileError(f"{where}: unknown tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}")
    return frozenset(tags)


def _parse_partners(raw: dict[str, Any], codes: Mapping[str, str], where: Where) -> dict[str, str]:
    """`partner.<language>`: the concurrent second job, one for every language of the case."""
    if "partner" not in raw:
        return {}
    partners = get_table(raw, "partner", where)
    if set(partners) != set(codes):
        raise CaseFileError(f"{where}: partner must give code for exactly the case's languages")
    for language, text in partners.items():
        if not isinstance(text, str) or not text.strip():
            raise CaseFileError(f"{where}: partner.{language} must be non-empty code")
    if "cancel_after_ms" in raw:
        raise CaseFileError(f"{where}: a case with a partner cannot be cancelled")
    return dict(partners)
