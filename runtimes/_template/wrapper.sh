#!/bin/sh
# The template's wrapper (runtimes/PROTOCOL.md), started in the sandbox before its job is
# known: fd 4 holds the job message as language.py wrote it (the source's path, the entry
# point, then `name=value` lines). Each argument becomes ARG_<name>, the job's code is
# loaded and its entry point called. It writes nothing on fd 3: the result is the last
# line of stdout (runtime.toml's result_fallback); a failure is the exit status's.
set -eu
IFS= read -r source <&4
IFS= read -r entry_point <&4
while IFS= read -r argument <&4; do
    export "ARG_${argument%%=*}=${argument#*=}"
done
exec 4<&-
. "$source"
"$entry_point"
