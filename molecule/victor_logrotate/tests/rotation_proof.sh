#!/usr/bin/env bash
# Runs inside the Victor container (called by test_logrotate.py): Victor writes its log
# continuously (each POST /search/code logs one "Code search error" record) while
# logrotate -f rotates ROTATIONS times; prints a JSON summary.
set -u
LOGDIR=/var/lib/victor/.victor/logs
CONF=${CONF:-/etc/logrotate.d/victor-ai}
ROTATIONS=${ROTATIONS:-4}
MARK="Code search error"

count_all() {
    {
        cat "$LOGDIR/victor.log"
        for f in "$LOGDIR"/victor.log-*; do
            [ -e "$f" ] || continue
            case "$f" in *.gz) zcat "$f" ;; *) cat "$f" ;; esac
        done
    } 2>/dev/null | grep -c -F "$MARK"
}

before=$(count_all)
stat -c %i "$LOGDIR/victor.log" > /tmp/rotation-live.inode
rm -f /tmp/rotation-writer.stop /tmp/rotation-writer.count
(
    n=0
    while [ ! -e /tmp/rotation-writer.stop ] && [ "$SECONDS" -lt 60 ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H 'content-type: application/json' \
            -d '{"query":"rotation"}' http://127.0.0.1:8765/search/code)
        [ "$code" = 200 ] && n=$((n + 1))
    done
    echo "$n" > /tmp/rotation-writer.count
) &
writer=$!
failures=0
for _ in $(seq 1 "$ROTATIONS"); do
    sleep 1.5
    logrotate -f "$CONF" || failures=$((failures + 1))
done
sleep 1
touch /tmp/rotation-writer.stop
wait "$writer"
after=$(count_all)
pid=$(systemctl show --property=MainPID --value victor-api)
printf '{"before": %d, "after": %d, "written": %d, "logrotate_failures": %d, "gz": %d, "pid": %d}\n' \
    "$before" "$after" "$(cat /tmp/rotation-writer.count)" "$failures" \
    "$(find "$LOGDIR" -name 'victor.log-*.gz' | wc -l)" "$pid"
