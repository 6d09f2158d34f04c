#!/usr/bin/env bash
# Start/stop a REAL SMTP server (Debian python3-aiosmtpd) for alert tests.
#
# Usage:
#   scripts/smtp-server.sh start DIR PORT [starttls|tls|none]   -> prints "PID PORT"
#   scripts/smtp-server.sh stop DIR
#
# Modes (default starttls):
#   starttls  plain connect, STARTTLS offered and REQUIRED before MAIL
#             (set FERRY_SMTP_REQUIRE_TLS=0 to make it optional)
#   tls       implicit TLS (SMTPS) from the first byte
#   none      plain SMTP, no TLS
# No AUTH: the aiosmtpd command line has no authenticator, so EHLO never
# advertises AUTH; send without credentials.
#
# Layout in DIR (created if missing):
#   DIR/maildir/new/   one file per received message (Maildir, via the
#                      aiosmtpd Mailbox handler); each message carries added
#                      headers X-Peer, X-MailFrom, X-RcptTo (the envelope)
#   DIR/certs/         ca.pem (trust this), server.pem, server.key
#                      (scripts/gen-test-certs.sh, only if absent)
#   DIR/smtp.pid       server PID;  DIR/smtp.out  server stdout/stderr
#   DIR/smtp.env       KEY=VALUE: MODE HOST PORT MAILDIR CA PID
# File names are smtp.* so one DIR can also hold an ftp-server.sh server.
# Listens on 127.0.0.1:PORT only. Does not need root.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's interpreter: python3 on PATH may be a pyenv/venv one without aiosmtpd.
PY=${FERRY_SMTP_PYTHON:-/usr/bin/python3}
START_TIMEOUT=${FERRY_START_TIMEOUT:-10}
HOST=127.0.0.1

die() {
    echo "smtp-server.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# True if something accepts TCP connections on HOST:$1.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True while PID $1 exists and is not a zombie.
alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

cmd_start() {
    [[ $# -eq 2 || $# -eq 3 ]] || usage
    local dir=$1 port=$2 mode=${3:-starttls} pid i args
    [[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "bad PORT '$port'"
    "$PY" -c 'import aiosmtpd' 2>/dev/null || die "$PY has no aiosmtpd: run scripts/install-test-deps.sh"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ -f $dir/smtp.pid ]] && alive "$(cat "$dir/smtp.pid")"; then
        die "an SMTP server already runs for $dir (pid $(cat "$dir/smtp.pid"))"
    fi
    # Refuse a busy port: the readiness check would otherwise see someone else's server.
    if port_open "$port"; then die "port $port on $HOST is already in use"; fi

    # -n: never setuid to nobody (we may be root; the maildir stays ours).
    # Mailbox handler: messages land as files in DIR/maildir instead of stdout.
    args=(-m aiosmtpd -n -l "$HOST:$port" -c aiosmtpd.handlers.Mailbox)
    case $mode in
    starttls)
        "$SCRIPTS/gen-test-certs.sh" "$dir/certs"
        args+=(--tlscert "$dir/certs/server.pem" --tlskey "$dir/certs/server.key")
        # aiosmtpd requires STARTTLS before MAIL by default; allow opting out.
        if [[ ${FERRY_SMTP_REQUIRE_TLS:-1} == 0 ]]; then args+=(--no-requiretls); fi
        ;;
    tls)
        "$SCRIPTS/gen-test-certs.sh" "$dir/certs"
        args+=(--smtpscert "$dir/certs/server.pem" --smtpskey "$dir/certs/server.key")
        ;;
    none) ;;
    *) die "unknown mode '$mode' (starttls|tls|none)" ;;
    esac
    # Handler arguments come last: the maildir (created by the handler if missing).
    args+=("$dir/maildir")
    mkdir -p "$dir/maildir/new" "$dir/maildir/cur" "$dir/maildir/tmp"

    # Foreground server as our background child; stdio to a file so callers
    # reading our stdout are not held open by the server.
    "$PY" "${args[@]}" </dev/null >"$dir/smtp.out" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/smtp.pid"

    # Wait (bounded) until the port accepts connections; bail out if the server died.
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! alive "$pid"; then
            echo "smtp-server.sh: aiosmtpd exited during startup; $dir/smtp.out:" >&2
            tail -n 20 "$dir/smtp.out" >&2 || true
            rm -f "$dir/smtp.pid"
            exit 1
        fi
        port_open "$port" && break
        sleep 0.1
    done
    if ! port_open "$port"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/smtp.pid"
        die "aiosmtpd did not accept connections on $HOST:$port within ${START_TIMEOUT}s"
    fi

    cat >"$dir/smtp.env" <<EOF
MODE=$mode
HOST=$HOST
PORT=$port
MAILDIR=$dir/maildir
CA=$dir/certs/ca.pem
PID=$pid
EOF
    echo "$pid $port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid i
    [[ -f $dir/smtp.pid ]] || { echo "smtp-server.sh: no smtp.pid in $dir (not running)" >&2; return 0; }
    pid=$(cat "$dir/smtp.pid")
    [[ $pid =~ ^[0-9]+$ ]] || die "bad pid in $dir/smtp.pid"
    if alive "$pid"; then
        # SIGINT stops aiosmtpd's loop cleanly; SIGTERM, then KILL, if it does not exit.
        kill -INT "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; sleep 0.5; fi
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
        if alive "$pid"; then die "pid $pid did not exit"; fi
    fi
    rm -f "$dir/smtp.pid"
}

[[ $# -ge 1 ]] || usage
action=$1
shift
case $action in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
*) usage ;;
esac
