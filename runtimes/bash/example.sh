# The sample job `make run` sends: counts words.
name="$1"
text="${2:-the quick brown fox}"

echo "hello, $name" >&2
words=$(wc -w <<<"$text")
echo "{\"name\": \"$name\", \"words\": $words}" >&3
