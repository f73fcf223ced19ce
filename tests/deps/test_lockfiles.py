"""A lockfile in a request may only pin packages of the configured index, with hashes.

Anything else (a URL, a path, an index or other installer option) is refused as
INVALID_ARGUMENT naming the field, before anything runs: installed, it would fetch
code from wherever the caller likes, loopback and the service's own port included.
"""

from __future__ import annotations

import pytest

from gristmill.deps import lockfiles
from gristmill.errors import InvalidRequest
from gristmill.model import Lockfile
from gristmill.server import validate

HASH = "--hash=sha256:" + "ab" * 32
# What `uv pip compile --generate-hashes --no-header` writes.
UV_OUTPUT = f"""\
certifi==2024.2.2 \\
    {HASH} \\
    --hash=sha256:{"cd" * 32}
    # via requests
requests[socks]==2.31.0 \\
    {HASH}
    # via
    #   -r requirements.in
"""


def check(content: str) -> Lockfile:
    given = Lockfile("", "", content)
    return validate.lockfile(given, "", "python", "requirements.txt", "job.lockfile")


def test_what_the_resolver_writes_is_accepted_as_it_is():
    assert check(UV_OUTPUT).content == UV_OUTPUT
    pins = lockfiles.requirements_txt(UV_OUTPUT)
    assert [(p.name, p.extras, p.version, len(p.sha256)) for p in pins] == [
        ("certifi", (), "2024.2.2", 2),
        ("requests", ("socks",), "2.31.0", 1),
    ]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (f"evil @ http://127.0.0.1:50051/evil-1.0.tar.gz {HASH}", "is not `name==version`"),
        (f"evil @ file:///tmp/evil-1.0.tar.gz {HASH}", "is not `name==version`"),
        (f"git+https://github.com/evil/evil#egg=evil {HASH}", "is not `name==version`"),
        (f"http://169.254.169.254/evil-1.0.tar.gz {HASH}", "is not `name==version`"),
        (f"./evil-1.0.tar.gz {HASH}", "is not `name==version`"),
        (f"-e ./evil {HASH}", "is not `name==version`"),
        ("--index-url http://127.0.0.1:8080/simple", "is not `name==version`"),
        ("--extra-index-url=http://127.0.0.1:8080/simple", "is not `name==version`"),
        ("--find-links /tmp", "is not `name==version`"),
        ("-r other.txt", "is not `name==version`"),
        ("-c constraints.txt", "is not `name==version`"),
        (f"requests>=2 {HASH}", "is not `name==version`"),
        (f'requests==2.31.0 ; python_version >= "3" {HASH}', "';' is not `--hash"),
        (f"requests==2.31.0 {HASH} --index-url=http://127.0.0.1/", "'--index-url=http"),
        (f"requests==2.31.0 \\\n    {HASH} \\\n    --no-binary :all:", "'--no-binary' is not"),
        ("requests==2.31.0", "it has no `--hash"),
        (f"requests==2.31.0 --hash=md5:{'0' * 32}", "is not `--hash=sha256"),
        ("# nothing but a comment\n", "pins no package"),
    ],
)
def test_a_lockfile_naming_anything_but_pinned_index_packages_is_invalid_argument(
    content: str, why: str
):
    with pytest.raises(InvalidRequest) as refused:
        check(content)
    assert refused.value.field == "job.lockfile.content"
    assert why in str(refused.value)


def test_a_lockfile_format_without_rules_is_refused_not_trusted():
    with pytest.raises(lockfiles.LockfileRefused, match=r"no rules for 'poetry\.lock'"):
        lockfiles.check("poetry.lock", f"requests==2.31.0 {HASH}")


def test_a_format_registered_with_its_checker_is_checked_by_it():
    def only_pins(content: str) -> None:
        if not content.startswith("pin "):
            raise lockfiles.LockfileRefused("not a pin")

    lockfiles.register("test-pins.lock", only_pins)
    lockfiles.check("test-pins.lock", "pin a 1")
    with pytest.raises(lockfiles.LockfileRefused, match="not a pin"):
        lockfiles.check("test-pins.lock", "https://elsewhere/a")
