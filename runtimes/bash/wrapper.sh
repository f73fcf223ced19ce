# gristmill's Bash wrapper, per runtimes/PROTOCOL.md.
# Reads the job's positional arguments (NUL-separated) on fd 4, runs the job's
# script with them and its fd 3 going to an unlinked file, then sends that file's
# text on the real fd 3 as {"result_text": ...}. Nothing written there: the text of
# ./result.json (/job/result.json, as Windmill's Bash scripts write it), if the script
# left one; else the service takes the last line of stdout. A script killed by a signal
# makes the wrapper die of the same signal, so the verdict can say so.

args=()
while IFS= read -r -d '' arg; do
    args+=("$arg")
done <&4
exec 4<&-

# Opened twice and unlinked at once: the job never sees the file in its /tmp.
result_file="/tmp/.gristmill-result-$$"
exec 5>"$result_file" 6<"$result_file"
rm -f "$result_file"

/bin/bash /job/main.sh "${args[@]}" 3>&5 5>&- 6<&-
status=$?
exec 5>&-

text=""
IFS= read -r -d '' text <&6
if [[ -z $text && -f /job/result.json ]]; then
    IFS= read -r -d '' text </job/result.json
fi
if [[ -n $text ]]; then
    while [[ $text == *$'\n' ]]; do
        text=${text%$'\n'}
    done
    text=${text//\\/\\\\}
    text=${text//\"/\\\"}
    text=${text//$'\n'/\\n}
    text=${text//$'\r'/\\r}
    text=${text//$'\t'/\\t}
    printf '{"result_text":"%s"}' "$text" >&3
fi

# Bash reports a child killed by signal N as status 128+N, the same as `exit 128+N`.
# SIGSYS (159) is not relayed: a script's own `exit 159` must not read as a refused call.
if ((status > 128 && status < 159)); then
    signal=$((status - 128))
    trap - "$signal" 2>/dev/null
    kill -s "$signal" "$$"
fi
exit "$status"
