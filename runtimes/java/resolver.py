"""Maven as the Java resolver: Maven's own resolver (`mvn`, Debian's package) in the resolve
sandbox, with its local repository in the shared download cache.

    lock     a generated pom.xml naming the `//DEPS` coordinates; `dependency:list` resolves
             them transitively (Maven's nearest-wins mediation); the lockfile is every
             resolved `group:artifact:version` with the SHA-256 of its jar, computed from
             the jar Maven downloaded.
    install  a pom naming exactly the pins, each with every transitive dependency excluded,
             so that Maven fetches those jars and nothing else (only when the local
             repository lacks one); the jars are copied into the environment's `jars/`
             and their SHA-256 checked against the lockfile by our script, not by Maven;
             `classpath` lists them, as the run sees them, in the lockfile's order.

The lockfile's lines are checked before any step runs (`check`, registered with
`gristmill.languages.lockfiles`): a coordinate of letters, digits, '.', '_' and '-', and a
hash; nothing that could name a URL, a path or an option reaches Maven.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gristmill.languages import JAIL_ENV_DIR, Dependency, Lockfile, Step, ToolContext
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.lockfiles import LockfileRefused

LOCK_FORMAT = "maven.lock"
MAVEN = "/usr/share/maven/bin/mvn"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
"""Pinned, so that no step asks Central which plugin version is the newest."""

_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_])?"
COORDINATE = re.compile(rf"(?P<group>{_PART}):(?P<artifact>{_PART}):(?P<version>{_PART})")
_PIN = re.compile(rf"(?P<coordinate>{COORDINATE.pattern})\s+sha256:(?P<sha256>[0-9a-f]{{64}})")
_HEADER = "# gristmill Java lockfile: group:artifact:version sha256:<hex> of its jar\n"

# Maven's JVM: quick to start, bounded; its messages plain (batch mode, no colours).
_ENV = {
    "MAVEN_OPTS": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xmx512m -Xshare:auto",
    "MAVEN_SKIP_RC": "1",
}

_SCRIPT_HEAD = """set -eu
for home in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/temurin-25-jdk-amd64; do
    if [ -x "$home/bin/java" ]; then JAVA_HOME=$home; break; fi
done
export JAVA_HOME
repo=/gristmill/cache/repository
mvn() {
    # Maven prints its errors on stdout: they belong on stderr, the step's messages.
    @MAVEN@ -B -ntp -s settings.xml -Dmaven.repo.local="$repo" "$@" >&2
}
jar_of() { # group:artifact:version -> the jar's path in the local repository
    group=${1%%:*}; rest=${1#*:}; artifact=${rest%%:*}; version=${rest#*:}
    echo "$repo/$(echo "$group" | tr . /)/$artifact/$version/$artifact-$version.jar"
}
""".replace("@MAVEN@", MAVEN)

_LOCK_SCRIPT = (
    _SCRIPT_HEAD
    + """
mvn @PLUGIN@:list -DoutputFile=/tmp/list.txt -DincludeScope=runtime \\
    -DoutputAbsoluteArtifactFilename=false -Dmdep.outputScope=false -DappendOutput=false
echo "@HEADER@"
# Lines such as "   com.google.code.gson:gson:jar:2.10.1" (plus ":compile" on some versions).
sed -n 's/^ *\\([^ :]*\\):\\([^ :]*\\):jar:\\([^ :]*\\).*$/\\1:\\2:\\3/p' /tmp/list.txt | sort -u |
while read -r coordinate; do
    jar=$(jar_of "$coordinate")
    if [ ! -f "$jar" ]; then echo "Maven left no jar for $coordinate" >&2; exit 1; fi
    set -- $(sha256sum "$jar")
    echo "$coordinate sha256:$1"
done
""".replace("@PLUGIN@", DEPENDENCY_PLUGIN).replace("@HEADER@", _HEADER.strip())
)

_INSTALL_SCRIPT = (
    _SCRIPT_HEAD
    + """
out=/gristmill/build
mkdir -p "$out/jars"
missing=
while read -r coordinate sum; do
    [ -f "$(jar_of "$coordinate")" ] || missing=yes
done < pins.txt
if [ -n "$missing" ]; then
    mvn @PLUGIN@:resolve -DincludeScope=runtime
fi
: > /tmp/sums
: > /tmp/classpath
while read -r coordinate sum; do
    jar=$(jar_of "$coordinate")
    name=$(echo "$coordinate" | tr : _).jar
    cp "$jar" "$out/jars/$name"
    echo "${sum#sha256:}  $out/jars/$name" >> /tmp/sums
    printf '%s%s' "${sep:-}" "@ENV@/jars/$name" >> /tmp/classpath
    sep=:
done < pins.txt
# Our own check of every jar against the lockfile, whatever the local repository held.
if ! sha256sum --check --quiet --strict /tmp/sums >&2; then
    echo "a jar does not match the lockfile's SHA-256" >&2
    exit 1
fi
cp /tmp/classpath "$out/classpath"
""".replace("@PLUGIN@", DEPENDENCY_PLUGIN).replace("@ENV@", JAIL_ENV_DIR)
)


@dataclass(frozen=True)
class Pin:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


# Maven's names for "the newest": a range by another name, never a pin.
_FLOATING = re.compile(r"LATEST|RELEASE|.*-SNAPSHOT", re.IGNORECASE)


def pins(content: str) -> tuple[Pin, ...]:
    """The pins of a Java lockfile; raises `LockfileRefused` naming the first other line:
    a repository URL, a path, an option, a classifier or type (a fourth part), a version
    range, a version that floats (LATEST, RELEASE, a SNAPSHOT), or an artifact twice."""
    found: dict[tuple[str, str], Pin] = {}
    for number, line in enumerate(content.splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _PIN.fullmatch(text)
        if match is None:
            raise LockfileRefused.at(number, text, "is not `group:artifact:version sha256:<hex>`")
        if _FLOATING.fullmatch(match["version"]):
            raise LockfileRefused.at(number, text, "is refused: its version floats")
        pin = Pin(match["group"], match["artifact"], match["version"], match["sha256"])
        if (pin.group, pin.artifact) in found:
            raise LockfileRefused.at(number, text, "pins an artifact a second time")
        found[(pin.group, pin.artifact)] = pin
    if not found:
        raise LockfileRefused("the lockfile pins no artifact")
    return tuple(found.values())


def _settings(context: ToolContext) -> str:
    """settings.xml: the configured repository mirrors everything, else Maven Central."""
    mirrors = ""
    if context.index_urls:
        mirrors = (
            "<mirrors><mirror><id>gristmill</id><mirrorOf>*</mirrorOf>"
            f"<url>{escape(context.index_urls[0])}</url></mirror></mirrors>"
        )
    return f'<?xml version="1.0"?><settings><offline>false</offline>{mirrors}</settings>\n'


def _pom(dependencies: Sequence[tuple[str, str, str]], exclude_transitive: bool) -> str:
    exclusion = (
        "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId>"
        "</exclusion></exclusions>"
        if exclude_transitive
        else ""
    )
    body = "".join(
        f"<dependency><groupId>{escape(g)}</groupId><artifactId>{escape(a)}</artifactId>"
        f"<version>{escape(v)}</version>{exclusion}</dependency>"
        for g, a, v in dependencies
    )
    return (
        '<?xml version="1.0"?><project xmlns="http://maven.apache.org/POM/4.0.0">'
        "<modelVersion>4.0.0</modelVersion><groupId>gristmill</groupId>"
        "<artifactId>gristmill-job</artifactId><version>0</version>"
        "<packaging>pom</packaging>"
        f"<dependencies>{body}</dependencies></project>\n"
    )


class Maven:
    name: str = "maven"
    lock_format: str = LOCK_FORMAT
    programs: tuple[str, ...] = ("mvn",)

    def version_argv(self, program_path: str) -> Sequence[str]:
        # Debian's mvn finds its home from its own path: run it where it lives.
        return (MAVEN, "--version", "-B")

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        coordinates = []
        for dependency in dependencies:
            match = COORDINATE.fullmatch(dependency.requirement)
            if match is None:
                raise DependencyFailure(f"{dependency.requirement!r} is not group:artifact:version")
            coordinates.append((match["group"], match["artifact"], match["version"]))
        return Step(
            argv=("/bin/sh", "lock.sh"),
            files={
                "lock.sh": _LOCK_SCRIPT,
                "pom.xml": _pom(coordinates, exclude_transitive=False),
                "settings.xml": _settings(context),
            },
            env=_ENV,
            stdout_is_result=True,
        )

    def check_lockfile(self, content: str) -> None:
        """Only exact `group:artifact:version` pins with SHA-256 (`pins`)."""
        pins(content)

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        try:
            pinned = pins(lockfile.content)
        except LockfileRefused as refused:
            raise DependencyFailure(f"the lockfile: {refused}") from refused
        return Step(
            argv=("/bin/sh", "install.sh"),
            files={
                "install.sh": _INSTALL_SCRIPT,
                "pins.txt": "".join(f"{p.coordinate} sha256:{p.sha256}\n" for p in pinned),
                "pom.xml": _pom(
                    [(p.group, p.artifact, p.version) for p in pinned], exclude_transitive=True
                ),
                "settings.xml": _settings(context),
            },
            env=_ENV,
        )
