# gristmill's Bash wrapper, per runtimes/PROTOCOL.md.
# Reads the job's positional arguments (NUL-separated) on fd 4, runs the job's
# script with them, its fd 3 going to a file, then sends that file's text on the
# real fd 3 as {"result_text": ...}. Nothing written there means the service takes
# the last line of stdout instead.

args=()
while IFS= read -r -d '' arg; do
    args+=("$arg")
done <&4
exec 4<&-

result_file="/tmp/.gristmill-result-$$"
/bin/bash /job/main.sh "${args[@]}" 3>"$result_file"
status=$?

if [[ -s $result_file ]]; then
    text=$(<"$result_file")
    text=${text//\\/\\\\}
    text=${text//\"/\\\"}
    text=${text//$'\n'/\\n}
    text=${text//$'\r'/\\r}
    text=${text//$'\t'/\\t}
    printf '{"result_text":"%s"}' "$text" >&3
fi
rm -f "$result_file"
exit "$status"
