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
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gristmill.v1 import runtime_pb2

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

VERDICTS = frozenset(name for name, number in runtime_pb2.Verdict.items() if number != 0)
"""Verdict names a case may expect: the contract's enum, never its zero value."""

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
_EXPECT_KEYS = frozenset(
    {
        "verdict",
        "verdict_in",
        "result",
        "result_json",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "error_name",
        "error_message",
        "error_line",
        "exit_code",
        "signal",
        "within_ms",
        "files",
    }
)
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


class CaseFileError(Exception):
    """A case file is malformed; the message names the file, the case and the key."""


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
class Expectation:
    """What the outcome must show; `None` leaves that part of the outcome unchecked."""

    # Any one of these verdicts passes (one, unless the kernel may answer several ways).
    verdicts: tuple[str, ...]
    # Compared as JSON values, exactly: 1 and 1.0 differ, and so do 1 and true.
    result_json: str | None = None
    # Searched (`re.search`) in the stream decoded as UTF-8; anchor with \A and \Z.
    stdout: re.Pattern[str] | None = None
    stderr: re.Pattern[str] | None = None
    stdout_truncated: bool | None = None
    stderr_truncated: bool | None = None
    error_name: str | None = None
    error_message: re.Pattern[str] | None = None
    # The line of the innermost stack frame, in the user's own file.
    error_line: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    # The whole Execute call, as the runner measures it, must answer within this.
    within_ms: int | None = None
    # Exactly these files came back (`Outcome.files`), by path, with this UTF-8 text.
    files: Mapping[str, str] | None = None


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
    data = _read_toml(path)
    _only_keys(data, frozenset({"case", "translation", "not_applicable"}), str(path))
    cases: list[Case] = []
    for index, raw in enumerate(data.get("translation", []), start=1):
        name = raw.get("name")
        where = f"{path}: translation {name!r}" if isinstance(name, str) else f"{path}: #{index}"
        _only_keys(raw, frozenset({"name", "code", "partner", "expect"}), where)
        if not isinstance(name, str) or name not in shared:
            raise CaseFileError(f"{where}: names no shared case written for several languages")
        base = {k: v for k, v in shared[name].items() if k not in {"expect_for", "partner"}}
        base["code"] = {language: _required_str(raw, "code", where)}
        if "partner" in shared[name] or "partner" in raw:
            base["partner"] = {language: _required_str(raw, "partner", where)}
        base["expect_for"] = {language: _table(raw, "expect", where)}
        cases.extend(_parse_case(base, path, where))
    for index, raw in enumerate(data.get("case", []), start=1):
        name = raw.get("name")
        where = f"{path}: case {name!r}" if isinstance(name, str) else f"{path}: case #{index}"
        if not isinstance(raw.get("code"), dict):
            raw = {"language": language, **raw}
        cases.extend(_parse_case(raw, path, where))
    return cases


def not_applicable(language_files: Sequence[Path]) -> dict[str, dict[str, str]]:
    """Per language: the shared cases that mean nothing in it, each with the reason
    (`[not_applicable]` of its `conformance.toml`: case name = "why")."""
    found: dict[str, dict[str, str]] = {}
    for path in language_files:
        table = _table(_read_toml(path), "not_applicable", str(path))
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CaseFileError(f"{path}: cannot be read as TOML: {error}") from error


def _raw_cases(path: Path) -> list[dict[str, Any]]:
    raw_cases = _read_toml(path).get("case")
    return (
        [raw for raw in raw_cases if isinstance(raw, dict)] if isinstance(raw_cases, list) else []
    )


def load_case_file(path: Path) -> list[Case]:
    """The cases of one file, expanded to one `Case` per language."""
    data = _read_toml(path)
    _only_keys(data, frozenset({"case"}), str(path))
    raw_cases = data.get("case")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseFileError(f"{path}: expected one or more [[case]] tables")
    cases: list[Case] = []
    for index, raw in enumerate(raw_cases, start=1):
        name = raw.get("name")
        where = f"{path}: case {name!r}" if isinstance(name, str) else f"{path}: case #{index}"
        cases.extend(_parse_case(raw, path, where))
    return cases


def _parse_case(raw: dict[str, Any], path: Path, where: str) -> list[Case]:
    _only_keys(raw, _CASE_KEYS, where)
    name = _required_str(raw, "name", where)
    if not _NAME.fullmatch(name):
        raise CaseFileError(f"{where}: name must match {_NAME.pattern}")
    codes = _parse_codes(raw, where)

    if "args" in raw and "args_json" in raw:
        raise CaseFileError(f"{where}: give args or args_json, not both")
    args = _table(raw, "args", where) if "args" in raw else None
    args_json = _parse_args_json(raw, where)
    env = _string_table(raw, "env", where)
    context = _string_table(raw, "context", where)
    stdin = _optional_str(raw, "stdin", where) or ""
    output_files = _string_list(raw, "output_files", where) or ()
    script = _string_list(raw, "script", where)
    limits = _parse_limits(raw, where)
    entry_point = _optional_str(raw, "entry_point", where) or ""
    cancel_after_ms = _optional_int(raw, "cancel_after_ms", where, minimum=1)
    needs = _parse_needs(raw, codes, where)
    tags = _parse_tags(raw, where)
    partners = _parse_partners(raw, codes, where)

    base_expect = _table(raw, "expect", where)
    overrides = _table(raw, "expect_for", where) if "expect_for" in raw else {}
    for language in overrides:
        if language not in codes:
            raise CaseFileError(f"{where}: expect_for.{language} names a language without code")

    cases = []
    for language, code in codes.items():
        expect_where = f"{where} [{language}]"
        merged = _merge_expect(base_expect, _table(overrides, language, where, "expect_for."))
        cases.append(
            Case(
                name=name,
                language=language,
                code=code,
                expect=_parse_expect(merged, expect_where),
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


def _parse_codes(raw: dict[str, Any], where: str) -> dict[str, str]:
    """`language` + `code` text, or a `code.<language>` table: the case once per language."""
    code = raw.get("code")
    if isinstance(code, str):
        language = _required_str(raw, "language", where)
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


def _parse_args_json(raw: dict[str, Any], where: str) -> str | None:
    text = _optional_str(raw, "args_json", where)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CaseFileError(f"{where}: args_json is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise CaseFileError(f"{where}: args_json must be a JSON object")
    return text


def _string_table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    table = _table(raw, key, where) if key in raw else {}
    for name, value in table.items():
        if not isinstance(value, str):
            raise CaseFileError(f"{where}: {key}.{name} must be a string")
    return table


def _string_list(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in raw:
        return None
    values = raw[key]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CaseFileError(f"{where}: {key} must be a list of strings")
    return tuple(values)


def _parse_limits(raw: dict[str, Any], where: str) -> CaseLimits:
    if "limits" not in raw:
        return CaseLimits()
    table = _table(raw, "limits", where)
    _only_keys(table, _LIMIT_KEYS, f"{where}: limits")
    numbers = {
        key: _optional_int(table, key, where, minimum=0, prefix="limits.") or 0
        for key in _LIMIT_KEYS - {"network"}
    }
    network = _optional_bool(table, "network", where, prefix="limits.") or False
    return CaseLimits(network=network, **numbers)


def _parse_needs(raw: dict[str, Any], codes: Mapping[str, str], where: str) -> frozenset[str]:
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


def _parse_tags(raw: dict[str, Any], where: str) -> frozenset[str]:
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CaseFileError(f"{where}: tags must be a list of strings")
    if unknown := set(tags) - KNOWN_TAGS:
        raise CaseFileError(f"{where}: unknown tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}")
    return frozenset(tags)


def _parse_partners(raw: dict[str, Any], codes: Mapping[str, str], where: str) -> dict[str, str]:
    """`partner.<language>`: the concurrent second job, one for every language of the case."""
    if "partner" not in raw:
        return {}
    partners = _table(raw, "partner", where)
    if set(partners) != set(codes):
        raise CaseFileError(f"{where}: partner must give code for exactly the case's languages")
    for language, text in partners.items():
        if not isinstance(text, str) or not text.strip():
            raise CaseFileError(f"{where}: partner.{language} must be non-empty code")
    if "cancel_after_ms" in raw:
        raise CaseFileError(f"{where}: a case with a partner cannot be cancelled")
    return dict(partners)


def _merge_expect(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`expect` with one language's `expect_for` on top; a verdict replaces a verdict_in."""
    merged = dict(base)
    if "verdict" in override or "verdict_in" in override:
        merged.pop("verdict", None)
        merged.pop("verdict_in", None)
    merged.update(override)
    return merged


def _parse_expect(table: dict[str, Any], where: str) -> Expectation:
    _only_keys(table, _EXPECT_KEYS, f"{where}: expect")
    return Expectation(
        verdicts=_parse_verdicts(table, where),
        result_json=_parse_result(table, where),
        stdout=_optional_regex(table, "stdout", where),
        stderr=_optional_regex(table, "stderr", where),
        stdout_truncated=_optional_bool(table, "stdout_truncated", where, prefix="expect."),
        stderr_truncated=_optional_bool(table, "stderr_truncated", where, prefix="expect."),
        error_name=_optional_str(table, "error_name", where, prefix="expect."),
        error_message=_optional_regex(table, "error_message", where),
        error_line=_optional_int(table, "error_line", where, minimum=1, prefix="expect."),
        exit_code=_optional_int(table, "exit_code", where, prefix="expect."),
        signal=_optional_int(table, "signal", where, minimum=0, prefix="expect."),
        within_ms=_optional_int(table, "within_ms", where, minimum=1, prefix="expect."),
        files=_string_table(table, "files", f"{where}: expect") if "files" in table else None,
    )


def _parse_verdicts(table: dict[str, Any], where: str) -> tuple[str, ...]:
    if ("verdict" in table) == ("verdict_in" in table):
        raise CaseFileError(f"{where}: give exactly one of expect.verdict, expect.verdict_in")
    if "verdict" in table:
        verdicts = [_required_str(table, "verdict", where, prefix="expect.")]
    else:
        verdicts = table["verdict_in"]
        if (
            not isinstance(verdicts, list)
            or not verdicts
            or not all(isinstance(v, str) for v in verdicts)
        ):
            raise CaseFileError(f"{where}: expect.verdict_in must be a non-empty list of names")
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise CaseFileError(
                f"{where}: unknown verdict {verdict!r}; known: {', '.join(sorted(VERDICTS))}"
            )
    return tuple(verdicts)


def _parse_result(table: dict[str, Any], where: str) -> str | None:
    """The expected result as JSON text, whether written as TOML or as JSON text."""
    if "result" in table and "result_json" in table:
        raise CaseFileError(f"{where}: give expect.result or expect.result_json, not both")
    if "result" in table:
        try:
            return json.dumps(table["result"], ensure_ascii=False)
        except TypeError as error:
            raise CaseFileError(f"{where}: expect.result has no JSON form: {error}") from error
    text = _optional_str(table, "result_json", where, prefix="expect.")
    if text is not None:
        try:
            json.loads(text)
        except ValueError as error:
            raise CaseFileError(f"{where}: expect.result_json is not JSON: {error}") from error
    return text


def _only_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if unknown := set(table) - allowed:
        raise CaseFileError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _table(table: Mapping[str, Any], key: str, where: str, prefix: str = "") -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise CaseFileError(f"{where}: {prefix}{key} must be a table")
    return value


def _required_str(table: Mapping[str, Any], key: str, where: str, prefix: str = "") -> str:
    if key not in table:
        raise CaseFileError(f"{where}: {prefix}{key} is required")
    value = _optional_str(table, key, where, prefix)
    assert value is not None
    return value


def _optional_str(table: Mapping[str, Any], key: str, where: str, prefix: str = "") -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise CaseFileError(f"{where}: {prefix}{key} must be a string")
    return value


def _optional_int(
    table: Mapping[str, Any],
    key: str,
    where: str,
    *,
    minimum: int | None = None,
    prefix: str = "",
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    # bool is an int in Python but never a number in a case file.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CaseFileError(f"{where}: {prefix}{key} must be an integer")
    if minimum is not None and value < minimum:
        raise CaseFileError(f"{where}: {prefix}{key} must be at least {minimum}")
    return value


def _optional_bool(table: Mapping[str, Any], key: str, where: str, prefix: str = "") -> bool | None:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise CaseFileError(f"{where}: {prefix}{key} must be true or false")
    return value


def _optional_regex(table: Mapping[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    pattern = _optional_str(table, key, where, prefix="expect.")
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise CaseFileError(f"{where}: expect.{key} is not a valid regex: {error}") from error
