#!/bin/bash
# The C# build step (runtimes/PROTOCOL.md, "The build step"): in /job, compiles the
# job's main.cs (and its other .cs files) with the wrapper into /gristmill/build/job.exe
# (+ .mdb for line numbers).
# A job with NuGet packages has them in $GRISTMILL_ENVIRONMENT, whose references.rsp
# (written by the install step) lists their assemblies for mcs.
set -u
out="$GRISTMILL_BUILD"
options=(-nologo -debug -langversion:7.2 -target:exe -main:Gristmill.Wrapper
    -r:System.Numerics.dll -r:System.Core.dll "-out:$out/job.exe")
if [[ -n "${GRISTMILL_ENVIRONMENT:-}" && -f "$GRISTMILL_ENVIRONMENT/references.rsp" ]]; then
    options+=("@$GRISTMILL_ENVIRONMENT/references.rsp")
fi
# `#r "nuget: ..."` lines are for the resolver, not mcs: blanked, so lines keep their numbers
# (this /job is the build step's own copy).
sed -i -E 's/^[[:space:]]*#r[[:space:]].*$//' main.cs
# The job's other .cs files (its `files`, at any depth) are compiled with it.
shopt -s nullglob globstar
sources=(main.cs)
for file in **/*.cs; do
    # No file name becomes an option of mcs (-out:..., @file reads options from a file).
    if [[ "$file" == [-@]* ]]; then
        echo "gristmill: $file: a C# file's name may not start with '-' or '@'" >&2
        exit 1
    fi
    [[ "$file" == main.cs ]] || sources+=("$file")
done
messages="$(/usr/bin/mono /usr/lib/mono/4.5/mcs.exe "${options[@]}" "${sources[@]}" /gristmill/runtime/Wrapper.cs 2>&1)"
status=$?
# mcs writes its messages on stdout: they go to stderr, the compiler's words of the
# failure. An internal compiler error's own stack (Mono.CSharp frames) is left out.
printf '%s\n' "$messages" | grep -v '^  at \(Mono\.CSharp\|System\.\|(wrapper\)' >&2
if ((status != 0)); then
    if [[ "$messages" == *"Internal compiler error"* || "$messages" == *"not part of the C# 7.2"* \
        || "$messages" == *"Unexpected symbol \`record'"* || "$messages" == *"Unexpected symbol \`switch'"* ]]; then
        echo "gristmill: this service compiles C# 7.2 at most (Mono's mcs): no type patterns in" \
            "case labels (\`case int x:\`), switch expressions, records, top-level statements," \
            "async Main or other C# 8+ features" >&2
    fi
    exit "$status"
fi
