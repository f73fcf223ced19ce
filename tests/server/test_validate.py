"""Request rules that need no protobuf: limits, paths, names, exact arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.config import DEFAULT_LIMITS, MAX_LIMITS
from gristmill.errors import InvalidRequest, LimitTooHigh
from gristmill.languages import lockfiles
from gristmill.languages.spec import load_spec
from gristmill.model import JobFile, Limits, Lockfile
from gristmill.server import validate

ZERO = Limits(0, 0, 0, 0, 0)
PYTHON = load_spec(Path(__file__).resolve().parents[2] / "runtimes" / "python")


def test_zero_limits_take_the_defaults():
    assert validate.limits(ZERO, DEFAULT_LIMITS, MAX_LIMITS) == DEFAULT_LIMITS


def test_limit_over_the_maximum_is_refused_not_clipped():
    asked = Limits(0, MAX_LIMITS.memory_bytes + 1, 0, 0, 0)
    with pytest.raises(LimitTooHigh) as refused:
        validate.limits(asked, DEFAULT_LIMITS, MAX_LIMITS)
    assert refused.value.field == "job.limits.memory_bytes"


@pytest.mark.parametrize("memory_bytes", [1, 4096, 4 << 20, (16 << 20) - 1])
def test_memory_under_what_a_sandbox_runs_in_is_refused_naming_the_minimum(memory_bytes):
    asked = Limits(0, memory_bytes, 0, 0, 0)
    with pytest.raises(InvalidRequest) as refused:
        validate.limits(asked, DEFAULT_LIMITS, MAX_LIMITS)
    assert refused.value.field == "job.limits.memory_bytes"
    assert str(16 << 20) in str(refused.value)
    assert validate.limits(Limits(0, 16 << 20, 0, 0, 0), DEFAULT_LIMITS, MAX_LIMITS)


def test_a_path_component_over_255_bytes_is_refused_naming_the_field():
    with pytest.raises(InvalidRequest) as refused:
        validate.files([JobFile("d/" + "é" * 128, b"")], "main.py")
    assert refused.value.field == "job.files[0].path"
    assert validate.files([JobFile("d/" + "x" * 255, b"")], "main.py")


def test_network_needs_the_servers_permission():
    asked = Limits(0, 0, 0, 0, 0, network=True)
    with pytest.raises(InvalidRequest):
        validate.limits(asked, DEFAULT_LIMITS, MAX_LIMITS)
    allowed = Limits(**{**MAX_LIMITS.__dict__, "network": True})
    assert validate.limits(asked, DEFAULT_LIMITS, allowed).network


def test_args_json_keeps_big_integers_exactly():
    assert validate.args_json('{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


@pytest.mark.parametrize("text", ["{", "[]", '{"a": NaN}'])
def test_args_json_must_be_a_json_object(text):
    with pytest.raises(InvalidRequest):
        validate.args_json(text)


@pytest.mark.parametrize("path", ["", "/abs", "../up", "a/../../b", "nul\0", ".", "./"])
def test_file_paths_name_a_file_inside_the_job_directory(path):
    with pytest.raises(InvalidRequest):
        validate.files([JobFile(path=path, content=b"")], "main.py")


def test_duplicate_file_paths_are_refused():
    with pytest.raises(InvalidRequest):
        validate.files([JobFile("a/b", b""), JobFile("a//b", b"")], "main.py")


@pytest.mark.parametrize("path", ["main.py", "./main.py"])
def test_a_file_cannot_replace_the_jobs_own_code(path):
    with pytest.raises(InvalidRequest, match="job's code"):
        validate.files([JobFile(path, b"")], "main.py")


def test_a_path_cannot_be_both_a_file_and_a_directory():
    with pytest.raises(InvalidRequest, match="which is a file"):
        validate.files([JobFile("a", b""), JobFile("a/b", b"")], "main.py")
    with pytest.raises(InvalidRequest, match="which is a file"):
        validate.files([JobFile("main.py/x", b"")], "main.py")


def test_an_environment_too_large_to_send_is_refused():
    with pytest.raises(InvalidRequest, match=r"job\.env"):
        validate.env({"BIG": "x" * (validate.MAX_ENV_BYTES + 1)}, PYTHON)


@pytest.mark.parametrize("name", ["GRISTMILL_X", "gristmill_x", "1A", "A-B", ""])
def test_env_names_are_valid_and_not_reserved(name):
    with pytest.raises(InvalidRequest):
        validate.env({name: "v"}, PYTHON)


@pytest.mark.parametrize("job_id", ["ok-1", "a.b:c_D", "x" * 128])
def test_job_ids_of_the_allowed_alphabet_pass(job_id):
    assert validate.job_id(job_id) == job_id


def test_a_resolver_may_check_its_own_lockfile_format():
    def check(content: str) -> None:
        if "pinned" not in content:
            raise lockfiles.LockfileRefused("nothing pinned")

    given = Lockfile("", "", "pinned a 1")
    checked = validate.lockfile(given, "", "lang", "own-format", "job.lockfile", check)
    assert (checked.language, checked.format) == ("lang", "own-format")
    with pytest.raises(InvalidRequest, match="nothing pinned"):
        validate.lockfile(Lockfile("", "", "x"), "", "lang", "own-format", "job.lockfile", check)
    # Without a check of its own, a format the service has no rules for is refused.
    with pytest.raises(InvalidRequest, match="no rules"):
        validate.lockfile(given, "", "lang", "own-format", "job.lockfile")


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../x", "out/../../x", ""])
def test_output_files_stay_inside_the_job_directory(pattern):
    with pytest.raises(InvalidRequest, match=r"job\.output_files"):
        validate.output_files([pattern])


def test_output_file_patterns_are_bounded_in_number():
    with pytest.raises(InvalidRequest, match="patterns"):
        validate.output_files(["*"] * (validate.MAX_OUTPUT_PATTERNS + 1))


@pytest.mark.parametrize("key", ["team", "A-B", "", "X" * 65])
def test_context_keys_are_upper_case_names(key):
    with pytest.raises(InvalidRequest, match=r"job\.context"):
        validate.context({key: "v"})


def test_script_arguments_hold_no_nul():
    assert validate.script_argv(["a b", "--c"]) == ("a b", "--c")
    with pytest.raises(InvalidRequest, match=r"job.script.argv\[1\]"):
        validate.script_argv(["a", "b\0"])
