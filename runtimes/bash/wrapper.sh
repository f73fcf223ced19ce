# gristmill's Bash wrapper, per runtimes/PROTOCOL.md.
# Reads the job's context variables (NAME=value, NUL-separated, ended by an empty one)
# and then its positional arguments (NUL-separated) on fd 4, runs the job's
# script with them and its fd 3 going to an unlinked file, then sends that file's
# text on the real fd 3 as {"result_text": ...}. Nothing written there: the text of
# ./result.json (/job/result.json, as Windmill's Bash scripts write it), if the script
# left one; else the service takes the last line of stdout. A script killed by a signal
# makes the wrapper die of the same signal, so the verdict can say so.

# Opened twice and unlinked at once: the job never sees the file in its /tmp. By bash's
# loadable `unlink` (Debian's bash-builtins) where the machine has it: an rm process would
# cost every job about a millisecond. Before the job message: a warm sandbox does this
# while it waits.
result_file="/tmp/.gristmill-result-$$"
exec 5>"$result_file" 6<"$result_file"
if enable -f /usr/lib/bash/unlink unlink 2>/dev/null; then
    unlink "$result_file"
else
    rm -f "$result_file"
fi

while IFS= read -r -d '' variable <&4 && [[ -n $variable ]]; do
    export "$variable"
done
args=()
while IFS= read -r -d '' arg; do
    args+=("$arg")
done <&4
exec 4<&-

/bin/bash /job/main.sh "${args[@]}" 3>&5 5>&- 6<&-
status=$?
exec 5>&-

# Each byte that is not part of a UTF-8 character becomes U+FFFD: the message is JSON,
# so it must be UTF-8. ASCII needs no check; other text is checked at once by iconv and,
# if need be, repaired one character at a time.
has_high_bytes() {
    local LC_ALL=C
    [[ $1 == *[$'\x80'-$'\xff']* ]]
}

utf8_repaired() {
    local text=$1 fixed="" char code hex byte i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        printf -v code '%d' "'$char"
        if ((code >= 128)); then
            printf -v hex '%x' "$code"
            printf -v byte "\\x$hex"
            [[ $char == "$byte" ]] && char=$'\xef\xbf\xbd'
        fi
        fixed+=$char
    done
    printf '%s' "$fixed"
}

text=""
IFS= read -r -d '' text <&6
if [[ -z $text && -f /job/result.json ]]; then
    IFS= read -r -d '' text </job/result.json
fi
if [[ -n $text ]]; then
    if has_high_bytes "$text" && ! iconv -f UTF-8 -t UTF-8 >/dev/null 2>&1 <<<"$text"; then
        text=$(utf8_repaired "$text")
    fi
    while [[ $text == *$'\n' ]]; do
        text=${text%$'\n'}
    done
    text=${text//\\/\\\\}
    text=${text//\"/\\\"}
    text=${text//$'\n'/\\n}
    text=${text//$'\r'/\\r}
    text=${text//$'\t'/\\t}
    if [[ $text == *[[:cntrl:]]* ]]; then
        # Any other control character would make the message invalid JSON.
        for ((code = 1; code < 32; code++)); do
            printf -v hex %02x "$code"
            printf -v char "\\x$hex"
            printf -v escaped '\\u%04x' "$code"
            text=${text//"$char"/$escaped}
        done
    fi
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
