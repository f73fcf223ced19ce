"""The go command as the Go resolver: `go mod tidy` against the module proxy, with the
checksum database on, prints go.mod + go.sum (the lockfile); `go mod download` fetches
exactly those modules into the environment (`mod/`, a GOMODCACHE) that builds mount
read-only with `GOPROXY=off`. Every module is fetched once into the shared download
cache (`cache_dir/mod`), which later installs read first (a `file://` proxy)."""

from __future__ import annotations

from collections.abc import Sequence

from gristmill.languages import Dependency, Lockfile, Step, ToolContext
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.lockfiles import LockfileRefused

from . import dependencies as modules

GO = "/usr/local/go/bin/go"
LOCK_FORMAT = "go.mod+go.sum"


def _env(context: ToolContext) -> dict[str, str]:
    proxy = context.index_urls[0] if context.index_urls else "https://proxy.golang.org"
    return {
        "PATH": "/usr/local/go/bin:/usr/bin:/bin",
        "GOROOT": "/usr/local/go",
        "GOPATH": "/tmp/gopath",
        "GOCACHE": "/tmp/gocache",
        "GOMODCACHE": f"{context.cache_dir}/mod",
        "GOPROXY": f"file://{context.cache_dir}/mod/cache/download,{proxy},off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
        "GOENV": "off",
        "CGO_ENABLED": "0",
    }


# Fixed scripts: every input is in files the step writes, never in the script's text.
_LOCK = (
    "set -e; cd /job; go mod tidy >&2; "
    "printf -- '-- go.mod --\\n'; cat go.mod; "
    "printf -- '-- go.sum --\\n'; cat go.sum 2>/dev/null || true"
)
_INSTALL = (
    'set -e; cd /job; go mod download >&2; mkdir -p "$GRISTMILL_OUT"; '
    'cp go.mod go.sum "$GRISTMILL_OUT/"'
)


class GoModules:
    name: str = "go"
    lock_format: str = LOCK_FORMAT
    programs: tuple[str, ...] = ("go",)

    def version_argv(self, program_path: str) -> Sequence[str]:
        return (GO, "version")

    def check_lockfile(self, content: str) -> None:
        """Refuses (`LockfileRefused`) a lockfile a caller sends that is not only pins."""
        modules.parse_lock(content)

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        requires = [d.requirement for d in dependencies if d.source.value == "DECLARED"]
        imports = [d.name for d in dependencies if d.source.value == "INFERRED"]
        imports += [r.split()[0] for r in requires if not any(i == r.split()[0] for i in imports)]
        go_mod = f"module {modules.MODULE}\n\n{modules.GO_LINE}\n"
        if requires:
            go_mod += "\nrequire (\n" + "".join(f"\t{r}\n" for r in requires) + ")\n"
        stub = "package inner\n\nimport (\n" + "".join(f'\t_ "{i}"\n' for i in imports) + ")\n"
        return Step(
            argv=("/bin/sh", "-c", _LOCK),
            files={"go.mod": go_mod, "deps.go": stub},
            env=_env(context),
            stdout_is_result=True,
        )

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        try:
            lock = modules.parse_lock(lockfile.content)
        except LockfileRefused as refused:
            raise DependencyFailure(f"the lockfile: {refused}") from refused
        env = _env(context)
        # Straight into the environment: its own module cache, mounted read-only in builds.
        env["GOMODCACHE"] = f"{context.build_dir}/mod"
        env["GRISTMILL_OUT"] = context.build_dir
        env["GOFLAGS"] = "-mod=readonly -modcacherw"
        return Step(
            argv=("/bin/sh", "-c", _INSTALL),
            files={"go.mod": lock.go_mod(), "go.sum": lock.go_sum()},
            env=env,
        )
