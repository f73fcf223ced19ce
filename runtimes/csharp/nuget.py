"""gristmill's NuGet v3 client: resolves `#r "nuget: ..."` requirements into a lockfile,
and installs exactly a lockfile. Debian's `nuget` speaks only the v2 protocol, so this is
our own, standard library only, run by Debian's python3 in the resolve sandbox (the
service writes it into the step's /job; it never runs on the host).

    nuget.py lock FEED REQUIREMENTS          prints the lockfile (JSON) on stdout
    nuget.py install FEED LOCKFILE TARGET CACHE
    nuget.py --version

The protocol (https://learn.microsoft.com/nuget/api/overview): the service index names
the resources; `PackageBaseAddress/3.0.0` (the flat container) lists a package's
versions (`{id}/index.json`) and serves its `.nupkg`; `RegistrationsBaseUrl` gives each
version's dependency groups per target framework.

NuGet's own rules: a version `1.2` means `>= 1.2` and the **lowest** applicable version
is taken; `[1.2]` is exact, `[1.0,2.0)` a range; a package named nearer the job wins
over the same package deeper down ("nearest wins"); packages at the same depth get the
lowest version that satisfies all their ranges. Jobs run on Mono, so the assets are the
`lib/` folder of the newest .NET Framework 4.x, else of `netstandard2.0` (or older),
else `lib/` itself.

The lockfile is JSON: the feed, and per package its id, exact version and the SHA-512
of its `.nupkg` (base64, as NuGet's own `packages.lock.json` has it). `install` checks
every download against it before extracting anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

CLIENT_VERSION = "gristmill-nuget 1"
LOCK_VERSION = 1
TIMEOUT_S = 60
JAIL_ENV_DIR = "/gristmill/env"
"""Where jobs (and their build) find the installed environment."""

# .NET Framework 4.x first (newest that Mono 6.8 runs: 4.8), then .NET Standard.
FRAMEWORKS = (
    "net48", "net472", "net471", "net47", "net462", "net461", "net46",
    "net452", "net451", "net45", "net403", "net40", "net35", "net20",
    "netstandard2.0", "netstandard1.6", "netstandard1.5", "netstandard1.4",
    "netstandard1.3", "netstandard1.2", "netstandard1.1", "netstandard1.0",
)  # fmt: skip
_LONG_NAMES = {".netframework": "net", ".netstandard": "netstandard"}
ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
VERSION = re.compile(r"\d+(?:\.\d+){0,3}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
SHA512 = re.compile(r"[A-Za-z0-9+/]{86}==")


class Failure(Exception):
    """What the job's author must read: printed on stderr, exit status 1. `where` is
    the place in the lockfile refused, as keys from the top (an int: a list's n-th)."""

    def __init__(self, message: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.where = where


# --- versions and ranges -------------------------------------------------------------
def version_key(text: str) -> tuple[tuple[int, ...], int, tuple[tuple[int, int | str], ...]]:
    """Sortable NuGet (SemVer 2) version: release numbers, then stable after prerelease."""
    text = text.split("+", 1)[0]
    release, _, pre = text.partition("-")
    numbers = tuple(int(part) for part in release.split("."))
    numbers += (0,) * (4 - len(numbers))
    labels = tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in pre.split(".") if p)
    return numbers, 0 if pre else 1, labels


class Range:
    """A NuGet version range: `1.0` (>= 1.0), `[1.0]`, `[1.0,2.0)`, `(,2.0]`, ..."""

    def __init__(self, text: str) -> None:
        self.text = text = text.strip()
        self.low: str | None = None
        self.high: str | None = None
        self.low_inclusive = self.high_inclusive = True
        if not text:
            return
        if text[0] not in "[(":
            self._check(text)
            self.low = text
            return
        if text[-1] not in "])" or len(text) < 3:
            raise Failure(f"not a version range: {text!r}")
        self.low_inclusive, self.high_inclusive = text[0] == "[", text[-1] == "]"
        inner = text[1:-1]
        if "," not in inner:
            self._check(inner.strip())
            self.low = self.high = inner.strip()
            return
        low, high = (part.strip() for part in inner.split(",", 1))
        self.low = self._check(low) if low else None
        self.high = self._check(high) if high else None

    @staticmethod
    def _check(version: str) -> str:
        if not VERSION.fullmatch(version):
            raise Failure(f"not a version: {version!r}")
        return version

    def allows(self, version: str) -> bool:
        key = version_key(version)
        if self.low is not None:
            low = version_key(self.low)
            if key < low or (key == low and not self.low_inclusive):
                return False
        if self.high is not None:
            high = version_key(self.high)
            if key > high or (key == high and not self.high_inclusive):
                return False
        return True

    def __str__(self) -> str:
        return self.text or "any version"


# --- the feed ------------------------------------------------------------------------
class Feed:
    def __init__(self, url: str) -> None:
        self.url = url
        index = self._json(url)
        resources: dict[str, str] = {}
        for resource in index.get("resources", []):
            kinds = resource.get("@type", [])
            for kind in [kinds] if isinstance(kinds, str) else kinds:
                resources.setdefault(kind, resource.get("@id", ""))
        self.flat = self._resource(resources, "PackageBaseAddress/3.0.0")
        self.registrations = self._resource(resources, "RegistrationsBaseUrl")
        self._versions: dict[str, list[str]] = {}
        self._leaves: dict[str, dict[str, dict[str, Any]]] = {}

    def _resource(self, resources: dict[str, str], kind: str) -> str:
        for name, url in resources.items():
            if name == kind or name.startswith(kind + "/"):
                return url.rstrip("/") + "/"
        raise Failure(f"the feed {self.url} has no {kind} resource")

    def _get(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                return response.read()  # type: ignore[no-any-return]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise LookupError(url) from error
            raise Failure(f"{url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Failure(f"the feed is unreachable: {url}: {reason}") from error

    def _json(self, url: str) -> dict[str, Any]:
        try:
            return json.loads(self._get(url))  # type: ignore[no-any-return]
        except LookupError as missing:
            raise Failure(f"not found on the feed: {url}") from missing
        except ValueError as error:
            raise Failure(f"{url}: not JSON: {error}") from error

    def versions(self, package: str) -> list[str]:
        """The package's versions on the feed, oldest first."""
        lower = package.lower()
        if lower not in self._versions:
            try:
                listed = json.loads(self._get(f"{self.flat}{lower}/index.json"))["versions"]
            except LookupError:
                raise Failure(f"package {package} was not found on the feed {self.url}") from None
            self._versions[lower] = sorted(listed, key=version_key)
        return self._versions[lower]

    def leaf(self, package: str, version: str) -> dict[str, Any]:
        """The registration's catalog entry of one version: its dependency groups."""
        lower = package.lower()
        if lower not in self._leaves:
            leaves = {}
            index = self._json(f"{self.registrations}{lower}/index.json")
            for page in index.get("items", []):
                items = page.get("items")
                if items is None:  # a page not inlined in the index
                    items = self._json(page["@id"]).get("items", [])
                for item in items:
                    entry = item.get("catalogEntry", {})
                    leaves[entry.get("version", "").lower()] = entry
            self._leaves[lower] = leaves
        entry = self._leaves[lower].get(version.lower())
        if entry is None:
            raise Failure(f"the feed's registration of {package} lacks version {version}")
        return entry

    def nupkg(self, package: str, version: str) -> bytes:
        lower, lower_version = package.lower(), version.lower()
        url = f"{self.flat}{lower}/{lower_version}/{lower}.{lower_version}.nupkg"
        try:
            return self._get(url)
        except LookupError:
            raise Failure(f"{package} {version}: no .nupkg at {url}") from None


# --- frameworks ----------------------------------------------------------------------
def short_framework(name: str) -> str:
    """`.NETFramework4.5` -> `net45`; short names stay as they are (lowercased)."""
    lower = name.lower()
    for long, short in _LONG_NAMES.items():
        if lower.startswith(long):
            digits = lower[len(long) :].lstrip("v")
            return short + (digits.replace(".", "") if short == "net" else digits)
    return lower


def best_framework(available: list[str]) -> str | None:
    """The folder (or dependency group) Mono should use among `available`; "" = any."""
    by_short = {short_framework(name): name for name in available}
    for framework in FRAMEWORKS:
        if framework in by_short:
            return by_short[framework]
    return "" if "" in by_short else None


def dependencies_of(entry: dict[str, Any]) -> list[tuple[str, Range]]:
    groups = {g.get("targetFramework", ""): g for g in entry.get("dependencyGroups", [])}
    chosen = best_framework(list(groups))
    if chosen is None:
        return []
    return [
        (dependency["id"], Range(dependency.get("range", "")))
        for dependency in groups[chosen].get("dependencies", []) or []
    ]


# --- lock ----------------------------------------------------------------------------
def lowest(feed: Feed, package: str, ranges: list[Range], wanted_by: list[str]) -> str:
    versions = feed.versions(package)
    stable = [v for v in versions if "-" not in v]
    for candidates in (stable, versions):
        for version in candidates:
            if all(r.allows(version) for r in ranges):
                return version
    wanted = "; ".join(f"{r} (by {who})" for r, who in zip(ranges, wanted_by, strict=True))
    raise Failure(f"no version of {package} satisfies {wanted}; the feed has {', '.join(versions)}")


def lock(feed_url: str, requirements: list[tuple[str, str]]) -> dict[str, Any]:
    feed = Feed(feed_url)
    chosen: dict[str, tuple[str, str]] = {}  # lower id -> (id, version)
    level: dict[str, tuple[str, list[Range], list[str]]] = {}
    for package, text in requirements:
        if not text:  # no version: the newest stable one, as `dotnet add package` does
            versions = [v for v in feed.versions(package) if "-" not in v] or feed.versions(package)
            text = f"[{versions[-1]}]"
        entry = level.setdefault(package.lower(), (package, [], []))
        entry[1].append(Range(text))
        entry[2].append("the job")
    while level:
        following: dict[str, tuple[str, list[Range], list[str]]] = {}
        decided = []
        for lower, (package, ranges, wanted_by) in level.items():
            version = lowest(feed, package, ranges, wanted_by)
            chosen[lower] = (package, version)
            decided.append((package, version))
        for package, version in decided:
            for dependency, dependency_range in dependencies_of(feed.leaf(package, version)):
                if dependency.lower() in chosen:  # nearest wins
                    continue
                entry = following.setdefault(dependency.lower(), (dependency, [], []))
                entry[1].append(dependency_range)
                entry[2].append(f"{package} {version}")
        level = following
    packages = []
    for package, version in sorted(chosen.values(), key=lambda p: p[0].lower()):
        digest = hashlib.sha512(feed.nupkg(package, version)).digest()
        packages.append(
            {"id": package, "version": version, "sha512": base64.b64encode(digest).decode()}
        )
    return {"version": LOCK_VERSION, "feed": feed_url, "packages": packages}


# --- install -------------------------------------------------------------------------
def read_lockfile(text: str, feed_url: str | None) -> list[dict[str, str]]:
    """The packages of a lockfile, refused unless every entry is an exact, hashed pin
    (and it was made from `feed_url`, unless that is None)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise Failure(f"the lockfile is not JSON: {error}") from error
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise Failure(
            f"the lockfile is not a version {LOCK_VERSION} gristmill NuGet lockfile", ("version",)
        )
    if set(data) != {"version", "feed", "packages"}:
        raise Failure(f"the lockfile's keys {sorted(data)} are not version, feed and packages")
    if not isinstance(data["feed"], str):
        raise Failure("the lockfile's feed is not a URL", ("feed",))
    if feed_url is not None and data["feed"] != feed_url:
        raise Failure(f"the lockfile was made from another feed than {feed_url!r}", ("feed",))
    packages = data["packages"]
    if not isinstance(packages, list) or not packages:
        raise Failure("the lockfile has no list of packages", ("packages",))
    seen: set[str] = set()
    for index, package in enumerate(packages):
        where = ("packages", index)
        if not isinstance(package, dict) or set(package) != {"id", "version", "sha512"}:
            raise Failure("the lockfile's entry is not id, version and sha512", where)
        if not all(isinstance(v, str) for v in package.values()):
            raise Failure("the lockfile's entry is not id, version and sha512", where)
        if not ID.fullmatch(package["id"]):
            raise Failure("the entry's id is not a package id", (*where, "id"))
        if not VERSION.fullmatch(package["version"]):
            raise Failure("the entry is not an exact package version", (*where, "version"))
        if not SHA512.fullmatch(package["sha512"]):
            raise Failure("the entry has no SHA-512", (*where, "sha512"))
        if package["id"].lower() in seen:
            raise Failure("the entry pins a package a second time", (*where, "id"))
        seen.add(package["id"].lower())
    return packages


def _extract(archive: zipfile.ZipFile, target: Path) -> None:
    for member in archive.infolist():
        name = urllib.parse.unquote(member.filename)
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\\" in name:
            raise Failure(f"the package holds an unsafe path: {member.filename!r}")
        if member.is_dir():
            continue
        path = target.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, path.open("wb") as destination:
            shutil.copyfileobj(source, destination)


def _assets(package_dir: Path) -> list[Path]:
    """The .dll files of the lib/ folder Mono should use."""
    lib = package_dir / "lib"
    if not lib.is_dir():
        return []
    folders = [entry.name for entry in lib.iterdir() if entry.is_dir()]
    root_dlls = [entry for entry in lib.iterdir() if entry.name.lower().endswith(".dll")]
    chosen = best_framework(folders + ([""] if root_dlls else []))
    if chosen is None:
        return []
    folder = lib / chosen if chosen else lib
    return sorted(entry for entry in folder.iterdir() if entry.name.lower().endswith(".dll"))


def _seal(root: Path) -> None:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            (Path(directory) / name).chmod(0o444)
        Path(directory).chmod(0o555)


def _sha512(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


def _download(
    feeds: dict[str, Feed], feed_url: str, package: dict[str, str], downloads: Path
) -> Path:
    """The package's .nupkg, from the download cache if its hash is the lockfile's (the
    feed, in `feeds`, is asked for its service index only when something is missing)."""
    cached = downloads / f"{package['id'].lower()}.{package['version'].lower()}.nupkg"
    if cached.exists() and _sha512(cached.read_bytes()) == package["sha512"]:
        return cached
    if feed_url not in feeds:
        feeds[feed_url] = Feed(feed_url)
    data = feeds[feed_url].nupkg(package["id"], package["version"])
    digest = _sha512(data)
    if digest != package["sha512"]:
        raise Failure(
            f"{package['id']} {package['version']}: the .nupkg's SHA-512 is {digest}, "
            f"the lockfile says {package['sha512']}"
        )
    partial = cached.with_name(cached.name + ".part")
    partial.write_bytes(data)
    partial.replace(cached)
    return cached


def install(feed_url: str, lockfile: str, target_dir: str, cache_dir: str) -> None:
    """Installs exactly `lockfile` into `target_dir`: each package extracted under
    packages/<id>/<version>/, the assemblies Mono should use copied into lib/, and
    references.rsp listing them for mcs; everything read-only."""
    packages = read_lockfile(lockfile, feed_url)
    target = Path(target_dir)
    downloads = Path(cache_dir) / "nupkg"
    downloads.mkdir(parents=True, exist_ok=True)
    lib = target / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    references = []
    feeds: dict[str, Feed] = {}
    for package in packages:
        nupkg = _download(feeds, feed_url, package, downloads)
        package_dir = target / "packages" / package["id"].lower() / package["version"].lower()
        package_dir.mkdir(parents=True)
        with zipfile.ZipFile(nupkg) as archive:
            _extract(archive, package_dir)
        for asset in _assets(package_dir):
            destination = lib / asset.name
            if destination.exists():
                raise Failure(f"two packages bring {asset.name}")
            shutil.copyfile(asset, destination)
            references.append(f"-r:{JAIL_ENV_DIR}/lib/{asset.name}\n")
        print(f"installed {package['id']} {package['version']}", file=sys.stderr)
    rsp = target / "references.rsp"
    rsp.write_text("".join(references))
    for path in (target / "packages", lib):
        if path.is_dir():
            _seal(path)
    rsp.chmod(0o444)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--version"]:
            print(CLIENT_VERSION, hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16])
        elif argv[:1] == ["lock"] and len(argv) == 3:
            lines = Path(argv[2]).read_text().splitlines()
            requirements = [(str(n), str(v)) for n, v in (json.loads(x) for x in lines if x)]
            print(json.dumps(lock(argv[1], requirements), indent=2))
        elif argv[:1] == ["install"] and len(argv) == 5:
            install(argv[1], Path(argv[2]).read_text(), argv[3], argv[4])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Failure as failure:
        print(f"nuget: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
