#!/usr/bin/env bash
# Self-check of the real SMTP test server (scripts/smtp-server.sh), for CI.
# For each mode (starttls, tls, none): start on a free port under a temp
# dir, send one message with Python's smtplib (verifying the test CA),
# check it landed in DIR/maildir/new with its envelope, stop, and print
# PASS/FAIL per mode; exit non-zero if any check failed. In starttls mode
# it also checks that MAIL before STARTTLS is refused (530).
#
# Usage: scripts/smtp-server-selftest.sh [MODE...]
# Env:   FERRY_SELFTEST_KEEP=1  keep the temp dir (it is kept anyway on failure)
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${FERRY_SMTP_PYTHON:-/usr/bin/python3}
if [[ $# -gt 0 ]]; then MODES=("$@"); else MODES=(starttls tls none); fi

TMP=$(mktemp -d /tmp/ferry-smtp-selftest.XXXXXX)
STARTED=()
overall=0

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        "$SCRIPTS/smtp-server.sh" stop "$d" >/dev/null 2>&1 || true
    done
    if [[ $overall -eq 0 && ${FERRY_SELFTEST_KEEP:-0} != 1 ]]; then
        rm -rf "$TMP"
    else
        echo "logs kept in $TMP" >&2
    fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Below Linux's ephemeral range (32768-60999): a port an outgoing
# connection holds accepts no connection either, yet cannot be bound.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        port_open "$p" || { echo "$p"; return 0; }
    done
    return 1
}

# Send one message; prints the TLS version used (or "plain").
send_mail() {
    "$PY" - "$@" <<'EOF'
import smtplib, ssl, sys
mode, port, ca, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
msg = ("From: ferry@example.test\r\nTo: ops@example.test\r\nSubject: %s\r\n\r\n"
       "transfer failed: test body\r\n" % subject)
ctx = ssl.create_default_context(cafile=ca) if mode != "none" else None
if mode == "tls":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=15)
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=15)
s.ehlo("selftest.example")
if mode == "starttls":
    assert s.has_extn("starttls"), "STARTTLS not offered"
    # aiosmtpd requires STARTTLS first: MAIL must be refused with 530.
    code, _ = s.mail("ferry@example.test")
    assert code == 530, "MAIL before STARTTLS answered %d, expected 530" % code
    s.starttls(context=ctx)
    s.ehlo("selftest.example")
s.sendmail("ferry@example.test", ["ops@example.test", "oncall@example.test"], msg)
print(s.sock.version() if hasattr(s.sock, "version") else "plain")
s.quit()
EOF
}

# shellcheck disable=SC2317  # called through check
mail_arrived() {
    local maildir=$1 subject=$2 f
    for f in "$maildir"/new/*; do
        [[ -f $f ]] || continue
        grep -q "^Subject: $subject" "$f" &&
            grep -q '^X-MailFrom: ferry@example.test' "$f" &&
            grep -q '^X-RcptTo: ops@example.test, oncall@example.test' "$f" &&
            return 0
    done
    return 1
}

# Record a check's result (uses $log and sets $failed of the current mode).
check() {
    local name=$1
    shift
    echo "== $name: $*" >>"$log"
    if "$@" >>"$log" 2>&1; then
        echo "  ok    $name"
    else
        echo "  FAIL  $name"
        failed=1
    fi
}

for mode in "${MODES[@]}"; do
    dir=$TMP/$mode
    log=$dir/selftest.log
    mkdir -p "$dir"
    failed=0
    echo "[smtp $mode]"
    port=$(free_port) || { echo "FAIL $mode (no free port)"; overall=1; continue; }
    if ! out=$("$SCRIPTS/smtp-server.sh" start "$dir" "$port" "$mode" 2>>"$log"); then
        echo "  FAIL  start (see $log)"
        tail -n 20 "$log" | sed 's/^/        /'
        echo "FAIL $mode"
        overall=1
        continue
    fi
    STARTED+=("$dir")
    read -r pid port <<<"$out"
    echo "  started pid $pid on 127.0.0.1:$port, maildir $dir/maildir"
    subject="ferry selftest $mode $$ $RANDOM"
    if tls=$(send_mail "$mode" "$port" "$dir/certs/ca.pem" "$subject" 2>>"$log"); then
        echo "  ok    message sent (transport: $tls)"
    else
        echo "  FAIL  message sent"
        failed=1
    fi
    check "message in maildir with envelope headers" mail_arrived "$dir/maildir" "$subject"
    "$SCRIPTS/smtp-server.sh" stop "$dir" >>"$log" 2>&1 || true
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null || echo gone)
    check "stopped (pid $pid state: $state)" test "$state" = gone -o "$state" = Z
    if [[ $failed -eq 0 ]]; then
        echo "PASS $mode"
    else
        echo "FAIL $mode (log: $log)"
        overall=1
    fi
done

exit "$overall"
