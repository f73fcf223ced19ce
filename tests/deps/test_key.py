"""The environment cache key: canonical, and changed by everything that decides an environment."""

from __future__ import annotations

import dataclasses

import pytest

from gristmill.deps.key import EnvironmentKey

KEY = EnvironmentKey(
    language="python",
    toolchain_version="Python 3.11.2",
    resolver="uv",
    resolver_version="uv 0.13.8",
    lockfile_sha256="ab" * 32,
    index_urls=(),
    platform="linux-x86_64-glibc2.36",
)


def test_digest_is_stable_hex_sha256():
    assert KEY.digest() == dataclasses.replace(KEY).digest()
    assert len(KEY.digest()) == 64
    int(KEY.digest(), 16)


@pytest.mark.parametrize(
    "change",
    [
        {"language": "python2"},
        {"toolchain_version": "Python 3.12.0"},
        {"resolver": "pip"},
        {"resolver_version": "uv 0.14.0"},
        {"lockfile_sha256": "cd" * 32},
        {"index_urls": ("https://mirror.example/simple",)},
        {"partition": "0123456789abcdef"},
        {"platform": "linux-aarch64-glibc2.36"},
        {"schema_version": 2},
    ],
)
def test_every_field_changes_the_digest(change):
    assert dataclasses.replace(KEY, **change).digest() != KEY.digest()


def test_fields_cannot_run_into_each_other():
    # With string concatenation "ab"+"c" and "a"+"bc" would collide; canonical JSON cannot.
    one = dataclasses.replace(KEY, language="py", toolchain_version="thon")
    other = dataclasses.replace(KEY, language="pyth", toolchain_version="on")
    assert one.digest() != other.digest()


def test_default_platform_names_this_machine():
    key = EnvironmentKey("python", "Python 3.11.2", "uv", "uv 0.13.8", "00", ())
    assert key.platform.startswith("linux-")
