#!/usr/bin/env bash
# Self-check of the real FTPS test servers (scripts/ftp-server.sh), for CI.
# Starts each KIND on free ports under a temp dir, checks it, stops it, and
# prints PASS/FAIL per kind; exits non-zero if any check failed.
#
# Usage: sudo scripts/ftp-server-selftest.sh [KIND...]
#   KIND defaults to: vsftpd-explicit vsftpd-implicit proftpd proftpd-implicit
#                     proftpd-stock pure-ftpd pyftpdlib
# Env:   FERRY_SELFTEST_KEEP=1  keep the temp dir (it is kept anyway on failure)
#
# Checks per kind:
#   - TLS 1.2 and TLS 1.3 are both negotiable, TLS 1.1 is not (openssl s_client)
#   - vsftpd, ProFTPD: a data connection without TLS session reuse is refused,
#     one with reuse is accepted (scripts/ftps-probe.py); Pure-FTPd and
#     pyftpdlib do not check reuse: both are accepted
#   - lftp over TLS 1.2: upload, list, download byte-identical, rename, delete
#   - Python ftplib over TLS 1.3: the same round trip
#   - lftp over TLS 1.3 as well, except on vsftpd (see note below)
#   - ProFTPD: FEAT lists HASH and XSHA256; HASH (after OPTS HASH SHA-256)
#     of an uploaded file equals its sha256sum
#   - FEAT (after login) is printed for every kind
# and the quirks each kind is there for (scripts/ftps-cmd.py, exact replies):
#   - proftpd-stock: STOR over an existing file "550 NAME: Overwrite permission
#     denied", APPE "451 NAME: Append/Restart not permitted, try again"
#   - pure-ftpd: SIZE of a missing file "550 Can't check for file existence";
#     a PROT C data connection refused (521)
#   - pyftpdlib with FERRY_QUIRKS: iis-size, no-feat, sha256, too-many-530,
#     consume, rnto-drop; then stor-421-after-data, no-size, no-mlst, lying-hash
# A failed check prints the tail of its output; the whole log is kept.
# Note: lftp (GnuTLS) and curl (OpenSSL) close an upload's data connection
# without reading the server's close_notify. vsftpd on TLS 1.3 sends session
# tickets on every data connection, so that close sends a TCP RST, the
# server loses the unread tail and answers 426 (flaky, about 1 in 3 uploads).
# That is client behaviour, not a server fault: the TLS 1.3 round trip on
# vsftpd uses Python, whose unwrap() waits for the server's close_notify.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's python3 (stdlib only is needed, but keep to the system interpreter, not a pyenv shim).
PY=/usr/bin/python3
PASV_COUNT=${FERRY_PASV_COUNT:-20}
FTP_USER=${FERRY_TEST_USER:-ferrytest}
FTP_PASSWORD=${FERRY_TEST_PASSWORD:-ferrytest-pw}
if [[ $# -gt 0 ]]; then
    KINDS=("$@")
else
    KINDS=(vsftpd-explicit vsftpd-implicit proftpd proftpd-implicit proftpd-stock pure-ftpd pyftpdlib)
fi

[[ $(id -u) -eq 0 ]] || { echo "ftp-server-selftest.sh: must run as root" >&2; exit 1; }
for tool in lftp openssl "$PY" timeout sha256sum cmp; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-test-deps.sh" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/ferry-ftp-selftest.XXXXXX)
# Traversable by the FTP test user, who must reach each DIR/root below it.
chmod 711 "$TMP"
STARTED=()
overall=0

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        "$SCRIPTS/ftp-server.sh" stop "$d" >/dev/null 2>&1 || true
    done
    if [[ $overall -eq 0 && ${FERRY_SELFTEST_KEEP:-0} != 1 ]]; then
        rm -rf "$TMP"
    else
        echo "logs kept in $TMP" >&2
    fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random base port whose whole block PORT..PORT+PASV_COUNT has no listener, below the
# kernel's ephemeral range when there is room (client sockets take their local ports from
# there, and a server cannot bind a port a live client socket holds).
free_base() {
    local base p ok lo hi from to
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range || { lo=32768; hi=60999; }
    if ((lo > 12000)); then from=10000 to=$((lo - PASV_COUNT - 2)); else from=$((hi + 1)) to=65000; fi
    for _ in $(seq 1 200); do
        base=$((from + (RANDOM * 32768 + RANDOM) % (to - from)))
        ok=1
        for ((p = base; p <= base + PASV_COUNT; p++)); do
            if port_open "$p"; then ok=0; break; fi
        done
        [[ $ok -eq 1 ]] && { echo "$base"; return 0; }
    done
    return 1
}

# Negotiated protocol for a forced version (tls1_1 / tls1_2 / tls1_3), or "refused".
tls_version() {
    local port=$1 ca=$2 implicit=$3 ver=$4 starttls=()
    [[ $implicit -eq 1 ]] || starttls=(-starttls ftp)
    # SECLEVEL=0 lets our client offer TLS 1.0/1.1 too, so a refusal is the server's.
    timeout 20 openssl s_client -connect "127.0.0.1:$port" "${starttls[@]}" "-$ver" \
        -cipher 'DEFAULT:@SECLEVEL=0' \
        -CAfile "$ca" -verify_return_error -verify_ip 127.0.0.1 -brief </dev/null 2>&1 |
        sed -n 's/^Protocol version: //p' | head -n1 | grep . || echo refused
}

# lftp round trip: put two files, list, get, rename, delete one; leave keep.bin.
# $5 is a GnuTLS priority string pinning the TLS version.
# shellcheck disable=SC2317  # called through check
lftp_roundtrip() {
    local dir=$1 port=$2 scheme=$3 tag=$4 priority=$5 w=$1/lftp-$4
    mkdir -p "$w"
    cat >"$w/script.lftp" <<EOF
set ssl:ca-file $dir/certs/ca.pem
set ssl:verify-certificate yes
set ssl:check-hostname yes
set ssl:priority "$priority"
set ftp:ssl-force yes
set ftp:ssl-protect-data yes
set ftp:ssl-protect-list yes
set ftp:passive-mode yes
set net:max-retries 1
set net:timeout 15
set cmd:fail-exit yes
debug 5 -o $w/debug.log
open -u $FTP_USER,$FTP_PASSWORD $scheme://127.0.0.1:$port
put $TMP/payload.bin -o up-$tag.bin
put $TMP/payload.bin -o keep-$tag.bin
cls -1 > $w/list1.txt
get up-$tag.bin -o $w/down.bin
mv up-$tag.bin renamed-$tag.bin
cls -1 > $w/list2.txt
rm renamed-$tag.bin
cls -1 > $w/list3.txt
EOF
    timeout 120 lftp -f "$w/script.lftp" &&
        grep -qx "up-$tag.bin" "$w/list1.txt" &&
        cmp "$TMP/payload.bin" "$w/down.bin" &&
        grep -qx "renamed-$tag.bin" "$w/list2.txt" && ! grep -qx "up-$tag.bin" "$w/list2.txt" &&
        ! grep -qx "renamed-$tag.bin" "$w/list3.txt" && grep -qx "keep-$tag.bin" "$w/list3.txt"
}

# Record a check's result (uses $log and sets $failed of the current kind); a failure
# prints the last lines of what the check said.
check() {
    local name=$1 out
    shift
    echo "== $name: $*" >>"$log"
    out=$dir/check.out
    if "$@" >"$out" 2>&1; then
        cat "$out" >>"$log"
        echo "  ok    $name"
    else
        cat "$out" >>"$log"
        echo "  FAIL  $name"
        tail -n 15 "$out" | sed 's/^/        | /'
        failed=1
    fi
}

# shellcheck disable=SC2317  # called through check
# Run scripts/ftps-cmd.py STEP... (on the current kind, or $port_override) and succeed when
# its output has every line given before "--" exactly ("< 550 ..." is a reply line).
expect_lines() {
    local want=() out rc=0 w
    while [[ $1 != -- ]]; do want+=("$1"); shift; done
    shift
    out=$("${cmd[@]}" "$@" 2>&1) || rc=$?
    echo "$out"
    [[ $rc -eq 0 ]] || { echo "(ftps-cmd.py exit status $rc)"; return 1; }
    for w in "${want[@]}"; do
        grep -qxF -- "$w" <<<"$out" || { echo "MISSING LINE: $w"; return 1; }
    done
}

# shellcheck disable=SC2317  # called through check
# Pure-FTPd and pyftpdlib accept data connections without TLS session reuse.
reuse_not_required() {
    local out rc=0
    out=$("${probe[@]}" reuse-required 2>&1) || rc=$?
    echo "$out"
    [[ $rc -eq 1 ]] && grep -q 'data connection ACCEPTED' <<<"$out" && grep -q 'with reuse: accepted' <<<"$out"
}

# Start KIND in DIR with the environment options given as NAME=VALUE words; sets $qport.
start_extra() {
    local kind=$1 qdir=$2 base out
    shift 2
    base=$(free_base) || return 1
    out=$(env "$@" "$SCRIPTS/ftp-server.sh" start "$kind" "$qdir" "$base") || return 1
    STARTED+=("$qdir")
    read -r _ qport <<<"$out"
}

# The quirk server bent by FERRY_QUIRKS: two more instances, a few commands each.
pyftpdlib_quirks() {
    local qdir=$dir-quirks1 qport saved=("${cmd[@]}") payload_size
    payload_size=$(stat -c %s "$TMP/payload.bin")
    if ! start_extra pyftpdlib "$qdir" FERRY_QUIRKS=iis-size,no-feat,sha256,too-many-530,consume,rnto-drop >>"$log" 2>&1; then
        check "start pyftpdlib with quirks (see $qdir/server.out)" false
        return
    fi
    cmd=(timeout 60 "$PY" "$SCRIPTS/ftps-cmd.py" --port "$qport" --ca "$qdir/certs/ca.pem"
        --user "$FTP_USER" --password "$FTP_PASSWORD")
    check "iis-size, no-feat, sha256, too-many-530 replies" expect_lines \
        "< 550 The system cannot find the file specified." \
        "< 211 No features" \
        "< 213 SHA-256 0-$((payload_size - 1)) $PAYLOAD_SHA x.part" \
        "< 213 $PAYLOAD_SHA" \
        "  < 530 Sorry, the maximum number of clients (1) for this user are already connected." -- \
        "TYPE I" "SIZE no-such-file" "FEAT" "@put $TMP/payload.bin x.part" "OPTS HASH SHA-256" \
        "HASH x.part" "XSHA256 x.part" "@login2"
    check "consume: a final upload is gone after its 226" expect_lines \
        "< 226 Transfer complete." "< 550 The system cannot find the file specified." -- \
        "TYPE I" "@put $TMP/payload.bin y.x12" "SIZE y.x12"
    check "rnto-drop: RNTO closes the connection without a reply" expect_lines \
        "< 350 Ready for destination name." "! closed: connection closed by the server" -- \
        "RNFR x.part" "RNTO x.x12"
    check "rnto-drop + consume: the rename happened, then the file was consumed" \
        grep -q "consume: removed /x.x12" "$qdir/pyftpdlib.log"
    check "consume: nothing left in the root" bash -c "[[ -z \$(ls -A '$qdir/root') ]]"

    qdir=$dir-quirks2
    if ! start_extra pyftpdlib "$qdir" FERRY_QUIRKS=stor-421-after-data,no-size,no-mlst,lying-hash >>"$log" 2>&1; then
        check "start pyftpdlib with quirks (see $qdir/server.out)" false
        cmd=("${saved[@]}")
        return
    fi
    cmd=(timeout 60 "$PY" "$SCRIPTS/ftps-cmd.py" --port "$qport" --ca "$qdir/certs/ca.pem"
        --user "$FTP_USER" --password "$FTP_PASSWORD")
    check "stor-421-after-data: 421 and closed after a whole upload" expect_lines \
        "< 421 Service not available, closing control connection." -- "@put $TMP/payload.bin z.bin"
    check "stor-421-after-data: the file is complete on disk" cmp "$TMP/payload.bin" "$qdir/root/z.bin"
    check "no-size, no-mlst replies" expect_lines \
        "< 502 Command not implemented." '< 500 Command "MLSD" not understood.' -- \
        "TYPE I" "SIZE z.bin" "MLSD"
    check "no-size, no-mlst: FEAT lists neither" bash -c "! ${cmd[*]@Q} FEAT | grep -E '^<  (SIZE|MLST)'"
    check "lying-hash: XSHA256 differs from sha256sum" bash -c \
        "${cmd[*]@Q} 'XSHA256 z.bin' | grep -E '^< 213 [0-9a-f]{64}\$' | grep -v '$PAYLOAD_SHA'"
    cmd=("${saved[@]}")
}

# 1 MiB of random bytes: CR, LF and NUL all occur, so ASCII-mode mangling would show.
head -c 1048576 /dev/urandom >"$TMP/payload.bin"
PAYLOAD_SHA=$(sha256sum "$TMP/payload.bin" | cut -d' ' -f1)

for kind in "${KINDS[@]}"; do
    dir=$TMP/$kind
    log=$dir/selftest.log
    mkdir -p "$dir"
    failed=0
    implicit=0
    scheme=ftp
    [[ $kind == *-implicit ]] && { implicit=1; scheme=ftps; }

    echo "[$kind]"
    if ! base=$(free_base); then
        echo "  FAIL  no free port block"
        echo "FAIL $kind"
        overall=1
        continue
    fi
    if ! out=$("$SCRIPTS/ftp-server.sh" start "$kind" "$dir" "$base" 2>>"$log"); then
        echo "  FAIL  start (see $log)"
        tail -n 20 "$log" | sed 's/^/        /'
        echo "FAIL $kind"
        overall=1
        continue
    fi
    STARTED+=("$dir")
    read -r pid port <<<"$out"
    probe=("$PY" "$SCRIPTS/ftps-probe.py" --port "$port" --ca "$dir/certs/ca.pem"
        --user "$FTP_USER" --password "$FTP_PASSWORD")
    [[ $implicit -eq 1 ]] && probe+=(--implicit)
    echo "  started pid $pid on 127.0.0.1:$port (passive $((port + 1))-$((port + PASV_COUNT))), root $(cat "$dir/root.path")"

    v12=$(tls_version "$port" "$dir/certs/ca.pem" "$implicit" tls1_2)
    v13=$(tls_version "$port" "$dir/certs/ca.pem" "$implicit" tls1_3)
    check "TLS 1.2 negotiable (got $v12)" test "$v12" = TLSv1.2
    check "TLS 1.3 negotiable (got $v13)" test "$v13" = TLSv1.3
    v11=$(tls_version "$port" "$dir/certs/ca.pem" "$implicit" tls1_1)
    check "TLS 1.1 refused (got $v11)" test "$v11" = refused
    cmd=(timeout 60 "$PY" "$SCRIPTS/ftps-cmd.py" --port "$port" --ca "$dir/certs/ca.pem"
        --user "$FTP_USER" --password "$FTP_PASSWORD")
    [[ $implicit -eq 1 ]] && cmd+=(--implicit)
    case $kind in
    pure-ftpd | pyftpdlib)
        check "data connection without TLS session reuse accepted ($kind does not check)" reuse_not_required
        ;;
    *) check "data connection without TLS session reuse refused" "${probe[@]}" reuse-required ;;
    esac
    check "lftp TLS 1.2: put/list/get/rename/delete" \
        lftp_roundtrip "$dir" "$port" "$scheme" tls12 "NORMAL:-VERS-ALL:+VERS-TLS1.2"
    if [[ $kind != vsftpd* ]]; then
        check "lftp TLS 1.3: put/list/get/rename/delete" \
            lftp_roundtrip "$dir" "$port" "$scheme" tls13 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
    fi
    check "python TLS 1.3: stor/nlst/retr/rename/dele" "${probe[@]}" roundtrip "$TMP/payload.bin"

    feat=$("${probe[@]}" feat 2>>"$log") || feat=""
    check "FEAT answered" test -n "$feat"
    echo "  FEAT after login:"
    while IFS= read -r line; do echo "        $line"; done <<<"$feat"
    if [[ $kind == proftpd* ]]; then
        check "FEAT lists HASH" grep -q '^ HASH ' <<<"$feat"
        check "FEAT lists XSHA256" grep -qx ' XSHA256' <<<"$feat"
        hash=$("${probe[@]}" hash keep-tls12.bin 2>>"$log") || hash=""
        check "HASH SHA-256 of uploaded file matches sha256sum" test "$hash" = "$PAYLOAD_SHA"
    fi

    case $kind in
    proftpd-stock)
        check "STOR over an existing file: 550 Overwrite permission denied" expect_lines \
            "< 550 keep-tls12.bin: Overwrite permission denied" -- "@put $TMP/payload.bin keep-tls12.bin"
        check "APPE: 451 Append/Restart not permitted" expect_lines \
            "< 451 keep-tls12.bin: Append/Restart not permitted, try again" -- "@append $TMP/payload.bin keep-tls12.bin"
        check "the refused uploads left the file alone" cmp "$TMP/payload.bin" "$dir/root/keep-tls12.bin"
        ;;
    pure-ftpd)
        check "SIZE of a missing file: 550 Can't check for file existence" expect_lines \
            "< 550 Can't check for file existence" -- "TYPE I" "SIZE no-such-file"
        check "PROT C data connection refused (521)" expect_lines \
            "< 521 Data connection cannot be opened with this PROT setting." -- "PROT C" "@list"
        ;;
    pyftpdlib)
        pyftpdlib_quirks
        ;;
    esac

    "$SCRIPTS/ftp-server.sh" stop "$dir" >>"$log" 2>&1 || true
    # A stopped server may linger as a zombie if PID 1 does not reap; that counts as gone.
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null || echo gone)
    check "stopped (pid $pid state: $state)" test "$state" = gone -o "$state" = Z
    check "port closed after stop" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"

    if [[ $failed -eq 0 ]]; then
        echo "PASS $kind"
    else
        echo "FAIL $kind (log: $log)"
        overall=1
    fi
done

exit "$overall"
