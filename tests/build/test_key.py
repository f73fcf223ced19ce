"""The build's cache key: each input that decides the output changes it; nothing else does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gristmill.jobs.build import BuildKey, SourceFile, folder_sha256

KEY = BuildKey(
    language="c",
    toolchain_version="gcc (Debian 12.2.0-14) 12.2.0",
    argv=("/usr/bin/gcc", "-o", "/gristmill/build/main", "main.c"),
    env=(),
    outputs=("main",),
    sources=(SourceFile.of("main.c", b"int x;"), SourceFile.of("util.h", b"#pragma once")),
    runtime_sha256="0" * 64,
    environment_key="",
)


def test_equal_inputs_give_the_same_digest():
    assert dataclasses.replace(KEY).digest() == KEY.digest()
    assert len(KEY.digest()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"toolchain_version": "gcc (Debian 13.1.0) 13.1.0"},
        {"argv": ("/usr/bin/gcc", "-O2", "-o", "/gristmill/build/main", "main.c")},
        {"env": (("GOFLAGS", "-trimpath"),)},
        {"outputs": ("main", "main.map")},
        {"sources": (SourceFile.of("main.c", b"int y;"), KEY.sources[1])},
        {"sources": (KEY.sources[0], SourceFile.of("util.h", b"#pragma once", True))},
        {"runtime_sha256": "1" * 64},
        {"environment_key": "e" * 64},
        {"platform": "linux-aarch64-glibc2.36"},
        {"schema_version": KEY.schema_version + 1},
    ],
    ids=lambda change: next(iter(change)),
)
def test_each_input_of_the_build_changes_the_digest(change):
    assert dataclasses.replace(KEY, **change).digest() != KEY.digest()


def test_folder_hash_follows_contents_and_names_but_not_bytecode(tmp_path: Path):
    (tmp_path / "wrapper.c").write_text("int main;")
    before = folder_sha256(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "language.pyc").write_bytes(b"\0")
    assert folder_sha256(tmp_path) == before
    (tmp_path / "wrapper.c").write_text("int main ;")
    edited = folder_sha256(tmp_path)
    assert edited != before
    (tmp_path / "wrapper.c").rename(tmp_path / "other.c")
    assert folder_sha256(tmp_path) != edited
