"""Python's dependencies: PEP 723 first, else imports mapped to distributions; the uv steps."""

from __future__ import annotations

import keyword
import re

import pytest

from gristmill.languages import DependencyFailure, Registry, ToolContext
from gristmill.model import Dependency, DependencySource, Lockfile

DECLARED, INFERRED = DependencySource.DECLARED, DependencySource.INFERRED


@pytest.fixture(scope="module")
def plugin():
    return Registry().get("python").plugin


def requirements(found: tuple[Dependency, ...]) -> list[str]:
    return [d.requirement for d in found]


def test_script_metadata_declares_exactly_its_dependencies(plugin):
    code = (
        "# /// script\n"
        '# requires-python = ">=3.10"\n'
        '# dependencies = ["requests<3", "rich"]\n'
        "# ///\n"
        "import requests, yaml\n"
    )
    found = plugin.dependencies(code)
    assert requirements(found) == ["python>=3.10", "requests<3", "rich"]
    assert {d.source for d in found} == {DECLARED}
    assert [d.where for d in found] == [f"script metadata, line {n}" for n in (2, 3, 3)]


def test_each_declared_dependency_has_its_own_line(plugin):
    code = (
        "import os\n"
        "# /// script\n"
        "# dependencies = [\n"
        '#   "requests<3",\n'
        "#   'rich',\n"
        "# ]\n"
        "# ///\n"
    )
    assert [d.where for d in plugin.dependencies(code)] == [
        "script metadata, line 4",
        "script metadata, line 5",
    ]


def test_script_metadata_without_dependencies_leaves_them_to_the_imports(plugin):
    code = '# /// script\n# requires-python = ">=3.8"\n# ///\nimport yaml\n'
    assert requirements(plugin.dependencies(code)) == ["python>=3.8", "pyyaml"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("# /// script\n# dependencies = [\n# ///\n", "script metadata at line 1"),
        ('# /// script\n# dependencies = ["not a requirement!"]\n# ///\n', "not a valid"),
        ('# /// script\n# dependencies = "requests"\n# ///\n', "must be a list"),
        (
            "# /// script\n# dependencies = []\n# ///\n\n" * 2,
            "more than one",
        ),
    ],
)
def test_malformed_metadata_is_a_dependency_failure(plugin, code, message):
    with pytest.raises(DependencyFailure, match=message):
        plugin.dependencies(code)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import yaml", ["pyyaml"]),
        ("from PIL import Image", ["pillow"]),
        ("import sklearn.linear_model", ["scikit-learn"]),
        ("from bs4 import BeautifulSoup", ["beautifulsoup4"]),
        ("import cv2", ["opencv-python"]),
        ("from dateutil import parser", ["python-dateutil"]),
        ("import jwt", ["pyjwt"]),
        ("from google.protobuf import json_format", ["protobuf"]),
        ("from google.cloud import storage", ["google-cloud-storage"]),
        ("import requests\nimport requests.adapters", ["requests"]),
        ("import Flask_Login", ["flask-login"]),
    ],
)
def test_imports_map_to_distributions(plugin, code, expected):
    found = plugin.dependencies(code)
    assert requirements(found) == expected
    assert {d.source for d in found} == {INFERRED}


def test_standard_library_relative_and_own_modules_are_no_dependencies(plugin):
    code = (
        "from __future__ import annotations\n"
        "import os, sys, json, asyncio.subprocess\n"
        "from . import sibling\n"
        "from .helpers import x\n"
        "import helpers\n"
        "import package.module\n"
        "import numpy as np\n"
    )
    found = plugin.dependencies(code, ["helpers.py", "package/module.py"])
    assert requirements(found) == ["numpy"]
    assert found[0].where == "import numpy as np, line 7"


def test_imports_anywhere_are_found_in_line_order(plugin):
    code = "def main():\n    import yaml\n\ntry:\n    import ujson\nexcept ImportError:\n    pass\n"
    assert requirements(plugin.dependencies(code)) == ["pyyaml", "ujson"]


def test_a_comment_pins_or_overrides_the_inferred_name(plugin):
    code = (
        "import yaml  # gristmill: pyyaml==6.0.1\n"
        "import magic  # gristmill: python-magic-bin>=0.4, filetype\n"
        "from mylib import (  # gristmill: my-lib[extra]==1.0\n"
        "    thing,\n"
        ")\n"
    )
    found = plugin.dependencies(code)
    assert requirements(found) == [
        "pyyaml==6.0.1",
        "python-magic-bin>=0.4",
        "filetype",
        "my-lib[extra]==1.0",
    ]
    assert found[0].where == "import yaml, line 1, by its comment"


def test_code_that_does_not_parse_has_no_dependencies(plugin):
    assert plugin.dependencies("import yaml\ndef broken(:\n") == ()


def test_the_distribution_table_is_well_formed():
    from runtimes.python.dependencies import DISTRIBUTIONS

    name = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    for module, distribution in DISTRIBUTIONS.items():
        assert all(p.isidentifier() and not keyword.iskeyword(p) for p in module.split("."))
        assert name.match(distribution), distribution
        assert module != distribution


def test_lock_step_compiles_with_hashes_for_the_jobs_interpreter(plugin):
    resolver = plugin.resolver()
    found = plugin.dependencies("import yaml\n")
    step = resolver.lock(found, ToolContext("Python 3.11.2", ("https://mirror/simple",)))
    assert step.argv[:3] == ("/gristmill/tools/uv", "pip", "compile")
    assert "--generate-hashes" in step.argv
    assert step.argv[step.argv.index("--python") + 1] == "/usr/bin/python3"
    assert step.argv[step.argv.index("--default-index") + 1] == "https://mirror/simple"
    assert step.files == {"requirements.in": "pyyaml\n"}
    assert step.stdout_is_result


def test_lock_step_refuses_a_script_for_another_python(plugin):
    found = plugin.dependencies('# /// script\n# requires-python = ">=3.12"\n# ///\n')
    with pytest.raises(DependencyFailure, match=r"requires Python >=3.12.*Python 3.11.2"):
        plugin.resolver().lock(found, ToolContext("Python 3.11.2"))


HASH = "--hash=sha256:" + "ab" * 32


def test_install_step_installs_exactly_the_lockfile_into_the_build_dir(plugin):
    content = f"PyYAML==6.0.1 \\\n    {HASH}\n    # via -r requirements.in\n"
    lockfile = Lockfile("python", "requirements.txt", content)
    step = plugin.resolver().install(lockfile, ToolContext("Python 3.11.2"))
    assert {"--require-hashes", "--no-deps", "--compile-bytecode"} <= set(step.argv)
    assert step.argv[step.argv.index("--target") + 1] == "/gristmill/build/site-packages"
    # What uv reads is rendered from the checked pins, not the caller's text.
    assert step.files == {"requirements.txt": f"pyyaml==6.0.1 {HASH}\n"}


@pytest.mark.parametrize("step", ["lock", "install"])
def test_both_steps_take_wheels_only_unless_source_builds_are_allowed(plugin, step):
    resolver = plugin.resolver()

    def argv(allow: bool) -> tuple[str, ...]:
        context = ToolContext("Python 3.11.2", allow_source_builds=allow)
        if step == "lock":
            made = resolver.lock(plugin.dependencies("import yaml\n"), context)
        else:
            made = resolver.install(Lockfile("python", "requirements.txt", f"a==1 {HASH}"), context)
        argv: tuple[str, ...] = made.argv
        return argv

    only_binary = argv(allow=False)
    assert only_binary[only_binary.index("--only-binary") + 1] == ":all:"
    assert "--only-binary" not in argv(allow=True)


@pytest.mark.parametrize(
    "requirement",
    [
        "evil @ http://127.0.0.1:8080/evil-1.0.tar.gz",
        "evil @ https://files.example/evil-1.0-py3-none-any.whl",
        "evil @ file:///tmp/evil-1.0.tar.gz",
        "evil @ git+https://github.com/evil/evil",
        'evil; python_version >= "3 # comment"',
        'evil; python_version >= "http://169.254.169.254/"',
    ],
)
def test_a_requirement_naming_anything_but_an_index_package_is_refused(plugin, requirement):
    listed = requirement.replace('"', "'")
    declared = f'# /// script\n# dependencies = ["{listed}"]\n# ///\n'
    with pytest.raises(DependencyFailure, match=r"names a URL|characters a requirement"):
        plugin.dependencies(declared)
    overridden = f"import evil  # gristmill: {requirement}\n"
    with pytest.raises(DependencyFailure, match=r"by its comment: .*(names a URL|characters)"):
        plugin.dependencies(overridden)


@pytest.mark.parametrize(
    "content",
    [
        f"evil @ http://127.0.0.1:8080/evil-1.0.tar.gz {HASH}",
        f"-e git+https://github.com/evil/evil#egg=evil {HASH}",
        f"--extra-index-url http://127.0.0.1:8080/simple\npyyaml==6.0.1 {HASH}",
    ],
)
def test_install_step_refuses_a_lockfile_naming_anything_but_index_packages(plugin, content):
    lockfile = Lockfile("python", "requirements.txt", content)
    with pytest.raises(DependencyFailure, match="the lockfile: line 1"):
        plugin.resolver().install(lockfile, ToolContext("Python 3.11.2"))


def test_bash_declares_no_dependencies():
    bash = Registry().get("bash").plugin
    assert bash.resolver() is None
    assert bash.dependencies("curl example.com") == ()
