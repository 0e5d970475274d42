#!/bin/sh
# copy's results cannot be written: the output is a full disk (/dev/full) or a closed pipe.
# Observed: an exception-group traceback (57 lines / 47 lines), exit 1.
set -u
P=$(dirname "$0")/../.venv/bin/ftp-pooler
D=$(mktemp -d /tmp/tester-resw-XXXXXX)
printf '[local]\ntype=local\nbase_path=/tmp\n' > "$D/l.ini"
seq 1 2000 | sed 's/.*/{"task_id":"t&","src_id":"local","src_path":"a","dst_id":"local","dst_path":"b"}/' > "$D/many.jsonl"
$P copy "$D/many.jsonl" --connections "$D/l.ini" -o /dev/full --stats 0 > "$D/full.txt" 2>&1
echo "-o /dev/full: exit $?; traceback lines: $(grep -c Traceback "$D/full.txt"); total stderr lines: $(wc -l < "$D/full.txt")"
$P copy "$D/many.jsonl" --connections "$D/l.ini" --stats 0 2> "$D/pipe.txt" | head -c 10 > /dev/null
echo "| head -c 10: traceback lines: $(grep -c Traceback "$D/pipe.txt"); total stderr lines: $(wc -l < "$D/pipe.txt")"
grep -E "Error|error" "$D/pipe.txt" | tail -2
