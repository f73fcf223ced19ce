"""The core's part of a lockfile given back: it calls the resolver's own rules, refuses
a format without rules, and a refusal names the line with a bounded excerpt.

No language is named here: each language's rules and their hostile lockfiles are in
`test_lockfile_attacks.py`.
"""

from __future__ import annotations

import pytest

from gristmill.errors import MAX_QUOTED_CHARS, InvalidRequest
from gristmill.languages import lockfiles
from gristmill.model import Lockfile
from gristmill.server import validate


def own_rules(content: str) -> None:
    """A format whose every line must be `pinned`."""
    for number, line in enumerate(content.splitlines(), start=1):
        if line != "pinned":
            raise lockfiles.LockfileRefused.at(number, line, "is not pinned")


def test_a_lockfile_format_without_rules_is_refused_not_trusted():
    with pytest.raises(lockfiles.LockfileRefused, match=r"no rules for 'poetry\.lock'"):
        lockfiles.check("poetry.lock", "requests==2.31.0")


def test_a_format_with_its_resolvers_own_rules_is_checked_by_them():
    lockfiles.check("tool.lock", "pinned", own_rules)
    with pytest.raises(lockfiles.LockfileRefused, match="not pinned"):
        lockfiles.check("tool.lock", "https://example.com/anything", own_rules)
    with pytest.raises(InvalidRequest, match=r"job\.lockfile\.content"):
        validate.lockfile(
            Lockfile("", "", "loose"), "", "lang", "tool.lock", "job.lockfile", own_rules
        )


def test_an_accepted_lockfile_is_read_once_a_refused_one_every_time():
    """A queue worker sends the lockfile it was given back with every job: the rules read
    it once (each job read it again before), and a refusal is never remembered."""
    read: list[str] = []

    def counting(content: str) -> None:
        read.append(content)
        own_rules(content)

    def validated(content: str) -> Lockfile:
        given = Lockfile("", "", content)
        return validate.lockfile(given, "", "counted", "tool.lock", "job.lockfile", counting)

    for _ in range(3):
        assert validated("pinned\n") == Lockfile("counted", "tool.lock", "pinned\n")
    assert read == ["pinned\n"]
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="not pinned"):
            validated("loose\n")
    assert read == ["pinned\n", "loose\n", "loose\n"]
    with pytest.raises(InvalidRequest, match="no rules"):  # what was accepted is by its rules
        validate.lockfile(Lockfile("", "", "pinned\n"), "", "counted", "tool.lock", "job.lockfile")


def test_a_refusal_names_the_line_with_a_bounded_excerpt():
    hostile = "pinned\npinned\n" + "--index-url=http://127.0.0.1:1/" + "x" * 10_000 + "\n"
    with pytest.raises(InvalidRequest) as refused:
        validate.lockfile(
            Lockfile("", "", hostile), "", "lang", "tool.lock", "job.lockfile", own_rules
        )
    assert refused.value.field == "job.lockfile.content"
    assert refused.value.detail.startswith("line 3: '--index-url=http://127.0.0.1:1/xx")
    assert len(refused.value.detail) < 2 * MAX_QUOTED_CHARS + 40


def test_a_nul_byte_is_refused_in_every_format_before_its_rules_read_it():
    def trusting(content: str) -> None:
        del content

    with pytest.raises(lockfiles.LockfileRefused, match=r"line 2: .*NUL") as refused:
        lockfiles.check("tool.lock", "pinned\npin\0ned\n", trusting)
    assert refused.value.line == 2


JSON_LOCK = """\
{
  "version": 1,
  "entries": [
    {
      "name": "a"
    },
    {
      "name": "b",
      "source": "file:../evil"
    }
  ]
}
"""


@pytest.mark.parametrize(
    ("where", "number"),
    [
        (("version",), 2),
        (("entries",), 3),
        (("entries", 0), 4),
        (("entries", 1), 7),
        (("entries", 1, "source"), 9),
        # Not found: the line of the last step that was.
        (("entries", 1, "missing"), 7),
        (("missing",), 1),
    ],
)
def test_a_json_lockfiles_refused_value_is_found_on_its_line(where, number):
    found, text = lockfiles.json_line(JSON_LOCK, where)
    assert found == number
    assert text == JSON_LOCK.splitlines()[number - 1]
