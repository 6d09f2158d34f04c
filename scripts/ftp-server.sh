#!/usr/bin/env bash
# Start/stop a REAL FTPS server for the interop test tier.
#
# Usage:
#   scripts/ftp-server.sh start KIND DIR PORT   -> prints "PID PORT" on stdout
#   scripts/ftp-server.sh stop DIR
#   scripts/ftp-server.sh kill-sessions DIR     SIGKILL the per-session processes, not the master
#   KIND: vsftpd-explicit | vsftpd-implicit | proftpd | proftpd-implicit |
#         proftpd-stock | pure-ftpd | pyftpdlib
#
# Kinds:
#   vsftpd-explicit, vsftpd-implicit   Debian vsftpd 3.0.3 (installed package)
#   proftpd, proftpd-implicit          ProFTPD 1.3.8 (dpkg -x), with AllowOverwrite on,
#                                      AllowStoreRestart on, HASH/XSHA256 (mod_digest)
#   proftpd-stock                      the same ProFTPD with ProFTPD's compiled defaults for
#                                      uploads (no AllowOverwrite, no AllowStoreRestart): STOR,
#                                      and REST+STOR, over an existing file answer "550 NAME:
#                                      Overwrite permission denied"; APPE "451 NAME:
#                                      Append/Restart not permitted, try again". With
#                                      FERRY_PROFTPD_EXTRA="AllowOverwrite on", REST+STOR over
#                                      an existing file answers that 451 too.
#   pure-ftpd                          Pure-FTPd 1.0.50 (dpkg -x), -Y 3 (TLS required on control
#                                      and data), virtual user in a per-DIR PureDB mapped to the
#                                      test user, chrooted to DIR/root; no TLS session reuse
#                                      required on data connections (it has no such option)
#   pyftpdlib                          scripts/quirk-ftp-server.py (Debian python3-pyftpdlib),
#                                      TLS required on control and data, replies bent by
#                                      FERRY_QUIRKS (see that script's header)
#
# Quirk options (environment, read by `start`):
#   FERRY_VSFTPD_EXTRA    vsftpd-*: lines appended to vsftpd.conf (newline-separated), e.g.
#                         "cmds_denied=SIZE" or "max_per_ip=1". vsftpd lists are comma-separated
#                         with NO spaces ("cmds_denied=SIZE,MDTM"); a later line wins over the
#                         default above it (e.g. "require_ssl_reuse=NO").
#   FERRY_PROFTPD_EXTRA   proftpd*: lines inserted at top level of proftpd.conf, after the
#                         defaults (e.g. "MaxClientsPerUser 1", or a <Limit HASH> block).
#                         ProFTPD keeps the FIRST occurrence of a directive: an extra line
#                         cannot override a default above ("AllowStoreRestart off" on kind
#                         proftpd has no effect); start from proftpd-stock and add what you
#                         want on instead (e.g. "AllowOverwrite on").
#   FERRY_PROFTPD_DIGEST  proftpd*: replaces the content of the <IfModule mod_digest.c> block
#                         (default "DigestEngine on" + "DigestAlgorithms all"), e.g.
#                         "DigestEngine on"$'\n'"DigestAlgorithms all"$'\n'"DigestMaxSize 1024"
#                         or "DigestEngine off".
#   FERRY_PUREFTPD_EXTRA  pure-ftpd: extra command-line options (split at blanks), e.g.
#                         "-y 1:0" (one session per user), "-C 1" (one per IP), "-G" (no rename),
#                         "-0" (upload to a temp file, switch atomically).
#   FERRY_QUIRKS          pyftpdlib: comma-separated quirk names (quirk-ftp-server.py).
#   FERRY_PASV_COUNT      passive ports per server (default 20)
#
# DIR is a per-test working directory owned by the caller (created if
# missing; `start` adds o+x (traverse, not read) to DIR and to any parent that
# lacks it, so the test user can reach DIR/root). Layout written by `start`:
#   DIR/root/          FTP root: the client sees it as "/" (chrooted), owned by
#                      the test user; anything the caller put there before
#                      `start` is chowned to the test user
#   DIR/root.path      absolute path of DIR/root (one line)
#   DIR/server.env     KEY=VALUE lines: KIND HOST PORT PASV_MIN PASV_MAX USER
#                      PASSWORD ROOT CA PID (for tests to read; values are
#                      not shell-quoted: split each line at the first "=")
#   DIR/certs/         ca.pem, server.pem, server.key... (gen-test-certs.sh,
#                      only if DIR/certs/ca.pem etc. are absent)
#   DIR/server.pid     PID of the server's master process
#   DIR/server.out     server stdout/stderr
#   DIR/*.conf, DIR/*.log  configuration and logs of the server
# `start` on a DIR whose server was stopped keeps DIR/root and the certificates:
# stop + start on the same PORT is a server restart.
#
# Network: control on 127.0.0.1:PORT only; passive data ports
# PORT+1 .. PORT+FERRY_PASV_COUNT (default 20), PASV address 127.0.0.1.
# So give each test a block of PORT..PORT+20 that no other test uses.
#
# Login: local system user FERRY_TEST_USER (default ferrytest) with password
# FERRY_TEST_PASSWORD (default ferrytest-pw), created if missing (Pure-FTPd and
# pyftpdlib: a virtual user of that name and password, files owned by that
# user). TLS is required on control and data connections; for vsftpd and
# ProFTPD data connections must also resume the control connection's TLS
# session (vsftpd require_ssl_reuse, ProFTPD TLSRequired without
# NoSessionReuseRequired); Pure-FTPd and pyftpdlib do not check reuse.
#
# Must run as root (PAM/shadow logins, chroot, setuid to the test user).
# Needs scripts/install-test-deps.sh to have run.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERRY_TEST_CACHE:-/opt/ferry-test}
PROFTPD_ROOT=$CACHE/proftpd/root
PROFTPD_MODULES=$CACHE/proftpd/modules
PUREFTPD_ROOT=$CACHE/pure-ftpd/root
FTP_USER=${FERRY_TEST_USER:-ferrytest}
FTP_PASSWORD=${FERRY_TEST_PASSWORD:-ferrytest-pw}
PASV_COUNT=${FERRY_PASV_COUNT:-20}
START_TIMEOUT=${FERRY_START_TIMEOUT:-10}
# A PAM service of our own: pam_unix only, no pam_shells/ftpusers surprises.
PAM_SERVICE=ferry-ftp-test
HOST=127.0.0.1

die() {
    echo "ftp-server.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# True if something accepts TCP connections on HOST:$1 (bash's /dev/tcp, no extra tools).
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True while PID $1 exists and is not a zombie (a dead child not yet reaped).
alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Print all descendants of PID $1, from one snapshot of /proc (no procps needed).
descendants() {
    # stat is "pid (comm) state ppid ..."; cut after the last ") " since comm may hold spaces.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
        { pid = $1; rest = $0; sub(/.*\) /, "", rest); split(rest, f, " "); kids[f[2]] = kids[f[2]] " " pid }
        END {
            n = split(kids[root], queue, " ")
            for (i = 1; i <= n; i++) {
                print queue[i]
                m = split(kids[queue[i]], more, " ")
                for (j = 1; j <= m; j++) queue[++n] = more[j]
            }
        }'
}

# Create the test user once and (re)set its password only when it changed.
ensure_user() {
    local marker_dir=$CACHE/users want home
    mkdir -p "$marker_dir"
    chmod 700 "$marker_dir"
    # Serialise with other starts running side by side: useradd/chpasswd lock /etc/shadow.
    exec 9>"$marker_dir/.lock"
    flock -w 30 9 || die "could not lock $marker_dir/.lock"
    if ! id -u "$FTP_USER" >/dev/null 2>&1; then
        # System user with a real shell (/bin/sh is in /etc/shells) and its own group.
        useradd --system --home-dir "$CACHE/home/$FTP_USER" --shell /bin/sh \
            --user-group "$FTP_USER" || die "useradd $FTP_USER failed"
        rm -f "$marker_dir/$FTP_USER"
    fi
    # vsftpd chdirs into the home directory before local_root, so it must exist.
    home=$(getent passwd "$FTP_USER" | cut -d: -f6)
    if [[ -z $home || $home == /nonexistent ]]; then
        home=$CACHE/home/$FTP_USER
        usermod --home "$home" "$FTP_USER"
    fi
    if [[ ! -d $home ]]; then
        mkdir -p "$home"
        chown "$FTP_USER:" "$home"
    fi
    want=$(printf '%s:%s' "$FTP_USER" "$FTP_PASSWORD" | sha256sum | cut -d' ' -f1)
    if [[ ! -f $marker_dir/$FTP_USER || $(cat "$marker_dir/$FTP_USER") != "$want" ]]; then
        printf '%s:%s\n' "$FTP_USER" "$FTP_PASSWORD" | chpasswd || die "chpasswd failed"
        echo "$want" >"$marker_dir/$FTP_USER"
    fi
    # Password ageing off, so a system user's login never expires.
    chage -M -1 -E -1 "$FTP_USER" 2>/dev/null || true
    ensure_pam
    exec 9>&-
}

# PAM file for vsftpd: authenticate and authorise against /etc/shadow only (called under the lock).
ensure_pam() {
    local f=/etc/pam.d/$PAM_SERVICE
    [[ -f $f ]] && return 0
    cat >"$f.tmp" <<'EOF'
# ferry interop tests (scripts/ftp-server.sh): local users via pam_unix only.
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so
password required pam_deny.so
EOF
    # Atomic replace: a concurrent vsftpd login never reads a half-written file.
    mv -f "$f.tmp" "$f"
}

write_vsftpd_conf() {
    local kind=$1 dir=$2 port=$3 conf=$2/vsftpd.conf implicit=NO
    [[ $kind == vsftpd-implicit ]] && implicit=YES
    # Root-owned, not group/world-writable: vsftpd refuses the config otherwise.
    install -d -o root -g root -m 755 "$dir/vsftpd-empty"
    cat >"$conf" <<EOF
# Written by scripts/ftp-server.sh ($kind). vsftpd 3.0.3 (Debian bookworm).
# Standalone, foreground, on 127.0.0.1:$port only.
listen=YES
listen_ipv6=NO
listen_address=$HOST
listen_port=$port
background=NO
# Containers: no network/pid namespaces, no seccomp filter.
isolate=NO
isolate_network=NO
seccomp_sandbox=NO
# Empty root-owned dir the pre-login process chroots into.
secure_chroot_dir=$dir/vsftpd-empty
# Local users only, through our PAM service; writable, umask 022.
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
pam_service_name=$PAM_SERVICE
userlist_enable=NO
# Every login lands in (and is chrooted to) DIR/root, which the user owns.
local_root=$dir/root
chroot_local_user=YES
allow_writeable_chroot=YES
# Passive only on loopback, ports PORT+1..PORT+$PASV_COUNT.
pasv_enable=YES
pasv_address=$HOST
pasv_addr_resolve=NO
pasv_min_port=$((port + 1))
pasv_max_port=$((port + PASV_COUNT))
connect_from_port_20=NO
# Logs in DIR: protocol log (vsftpd.log) and xferlog.
xferlog_enable=YES
dual_log_enable=YES
xferlog_file=$dir/vsftpd-xfer.log
vsftpd_log_file=$dir/vsftpd.log
log_ftp_protocol=YES
debug_ssl=YES
# TLS required on logins and data; data connections must resume the control session.
ssl_enable=YES
implicit_ssl=$implicit
rsa_cert_file=$dir/certs/server.pem
rsa_private_key_file=$dir/certs/server.key
allow_anon_ssl=NO
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
# No SSLv2/v3. This vsftpd has no ssl_tlsv1_1/_2/_3 options (an unknown option is fatal);
# ssl_tlsv1=YES only keeps the TLS family on and makes FEAT list "AUTH TLS" (with NO it
# is missing). TLS 1.0/1.1 still fail: Debian's default ssl_ciphers is
# ECDHE-RSA-AES256-GCM-SHA384, a TLS 1.2 suite. TLS 1.2 and 1.3 are both offered.
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
EOF
    if [[ -n ${FERRY_VSFTPD_EXTRA:-} ]]; then
        printf '# FERRY_VSFTPD_EXTRA:\n%s\n' "$FERRY_VSFTPD_EXTRA" >>"$conf"
    fi
    chown root:root "$conf"
    chmod 600 "$conf"
}

write_proftpd_conf() {
    local kind=$1 dir=$2 port=$3 conf=$2/proftpd.conf implicit="" uploads digest
    [[ $kind == proftpd-implicit ]] && implicit="TLSOptions UseImplicitSSL"
    # STOR over an existing name and REST for STOR; proftpd-stock keeps ProFTPD's
    # compiled defaults (both off).
    uploads="AllowOverwrite          on
AllowStoreRestart       on"
    [[ $kind == proftpd-stock ]] && uploads="# proftpd-stock: no AllowOverwrite / AllowStoreRestart (compiled defaults: off)"
    # HASH plus XCRC/XMD5/XSHA1/XSHA256/XSHA512 in FEAT. HASH default algorithm stays
    # ProFTPD's stock SHA-1: clients pick SHA-256 with OPTS HASH SHA-256.
    digest=${FERRY_PROFTPD_DIGEST:-"  DigestEngine          on
  DigestAlgorithms      all"}
    cat >"$conf" <<EOF
# Written by scripts/ftp-server.sh ($kind). ProFTPD from dpkg -x (never installed).
ServerName              "ferry test ProFTPD"
ServerType              standalone
DefaultServer           on
# Only 127.0.0.1:$port, IPv4, no DNS lookups.
Port                    $port
DefaultAddress          $HOST
SocketBindTight         on
UseIPv6                 off
UseReverseDNS           off
# Master runs as nobody between sessions; sessions switch to the logged-in user.
User                    nobody
Group                   nogroup
Umask                   022
MaxInstances            50
# Everything writable lives in DIR; no delay table, no wtmp.
PidFile                 $dir/proftpd.pid
ScoreboardFile          $dir/proftpd.scoreboard
DelayTable              none
WtmpLog                 off
SystemLog               $dir/proftpd.log
TransferLog             $dir/proftpd-xfer.log
# Modules of proftpd-core + proftpd-mod-crypto, collected in one folder.
ModulePath              $PROFTPD_MODULES
LoadModule              mod_tls.c
LoadModule              mod_digest.c
# /etc/shadow directly (no PAM), any shell, no /etc/ftpusers.
AuthPAM                 off
AuthOrder               mod_auth_unix.c
RequireValidShell       off
UseFtpUsers             off
# Chroot every login into DIR/root.
DefaultRoot             $dir/root
# STOR over an existing name, REST for STOR/RETR; RNFR/RNTO/DELE/MKD/SIZE/MDTM are allowed by default.
$uploads
AllowRetrieveRestart    on
# Passive only on loopback, ports PORT+1..PORT+$PASV_COUNT.
PassivePorts            $((port + 1)) $((port + PASV_COUNT))
MasqueradeAddress       $HOST

<IfModule mod_tls.c>
  TLSEngine             on
  TLSLog                $dir/proftpd-tls.log
  TLSProtocol           TLSv1.2 TLSv1.3
  # TLS on control and data; session reuse on data is required (no NoSessionReuseRequired).
  TLSRequired           on
  TLSRSACertificateFile $dir/certs/server.pem
  TLSRSACertificateKeyFile $dir/certs/server.key
  TLSCertificateChainFile $dir/certs/ca.pem
  TLSVerifyClient       off
  TLSRenegotiate        none
  $implicit
</IfModule>

# FERRY_PROFTPD_EXTRA:
${FERRY_PROFTPD_EXTRA:-}

<IfModule mod_digest.c>
$digest
</IfModule>
EOF
    chown root:root "$conf"
    chmod 600 "$conf"
}

# Pure-FTPd: a PureDB with one virtual user (test user's name and password) mapped to the
# test user's uid/gid, home DIR/root/./ ("/./": chroot there). SHA-512 crypt, not pure-pw's
# default argon2id (deliberately slow: about a second per login).
write_pureftpd_db() {
    local dir=$1 uid gid hash
    uid=$(id -u "$FTP_USER")
    gid=$(id -g "$FTP_USER")
    hash=$(printf '%s' "$FTP_PASSWORD" | openssl passwd -6 -stdin)
    (
        umask 077
        printf '%s:%s:%s:%s::%s/./::::::::::::\n' "$FTP_USER" "$hash" "$uid" "$gid" "$dir/root" >"$dir/pureftpd.passwd"
    )
    rm -f "$dir/pureftpd.pdb"
    "$PUREFTPD_ROOT/usr/bin/pure-pw" mkdb "$dir/pureftpd.pdb" -f "$dir/pureftpd.passwd" >/dev/null ||
        die "pure-pw mkdb failed"
}

# The command line of a foreground Pure-FTPd (no config file: the Debian wrapper is not used).
pureftpd_args() {
    local dir=$1 port=$2 extra=()
    # shellcheck disable=SC2206  # word splitting of the extra options is intended
    [[ -n ${FERRY_PUREFTPD_EXTRA:-} ]] && extra=($FERRY_PUREFTPD_EXTRA)
    PUREFTPD_ARGS=(
        -S "$HOST,$port" -4 -H                 # 127.0.0.1:PORT, IPv4 only, no DNS lookups
        -p "$((port + 1)):$((port + PASV_COUNT))" -P "$HOST"   # passive range and address
        -Y 3                                   # TLS required on control AND data (-Y 2: control only)
        -2 "$dir/certs/server.pem,$dir/certs/server.key"
        -l "puredb:$dir/pureftpd.pdb"          # virtual user only (no unix/PAM logins)
        -E -A                                  # no anonymous; chroot everyone
        -g "$dir/pure-ftpd.pid"
        -O "clf:$dir/pure-ftpd-xfer.log"       # transfer log; the protocol log only goes to syslog
        -f none                                # no syslog (none in a container)
        "${extra[@]}"
    )
}

cmd_start() {
    [[ $# -eq 3 ]] || usage
    local kind=$1 dir=$2 port=$3 pid i p
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    [[ $port =~ ^[0-9]+$ && $port -ge 1024 && $((port + PASV_COUNT)) -le 65535 ]] ||
        die "PORT must be 1024..$((65535 - PASV_COUNT))"
    case $kind in
    vsftpd-explicit | vsftpd-implicit)
        command -v vsftpd >/dev/null || [[ -x /usr/sbin/vsftpd ]] || die "vsftpd missing: run scripts/install-test-deps.sh"
        ;;
    proftpd | proftpd-implicit | proftpd-stock)
        [[ -x $PROFTPD_ROOT/usr/sbin/proftpd && -f $PROFTPD_MODULES/mod_tls.so ]] ||
            die "ProFTPD missing in $CACHE/proftpd: run scripts/install-test-deps.sh"
        ;;
    pure-ftpd)
        [[ -x $PUREFTPD_ROOT/usr/sbin/pure-ftpd && -x $PUREFTPD_ROOT/usr/bin/pure-pw ]] ||
            die "Pure-FTPd missing in $CACHE/pure-ftpd: run scripts/install-test-deps.sh"
        ;;
    pyftpdlib)
        /usr/bin/python3 -c 'import pyftpdlib.handlers, OpenSSL' 2>/dev/null ||
            die "python3-pyftpdlib / python3-openssl missing: run scripts/install-test-deps.sh"
        ;;
    *) die "unknown KIND '$kind' (vsftpd-explicit|vsftpd-implicit|proftpd|proftpd-implicit|proftpd-stock|pure-ftpd|pyftpdlib)" ;;
    esac

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ -f $dir/server.pid ]] && alive "$(cat "$dir/server.pid")"; then
        die "a server already runs for $dir (pid $(cat "$dir/server.pid"))"
    fi
    # Refuse a busy port: otherwise the readiness check would see someone else's server.
    if port_open "$port"; then die "port $port on $HOST is already in use"; fi

    # Test user and PAM service, under one lock shared by parallel starts.
    ensure_user
    "$SCRIPTS/gen-test-certs.sh" "$dir/certs"
    # The FTP root belongs to the test user; files the caller placed there become its own.
    mkdir -p "$dir/root"
    chown -R "$FTP_USER:" "$dir/root"
    chmod 755 "$dir/root"
    # vsftpd enters local_root as the test user: DIR and its parents must be traversable
    # (o+x only, not readable); tempdirs are 0700, so add o+x where missing and say so.
    p=$dir
    while [[ $p != / ]]; do
        if ! runuser -u "$FTP_USER" -- test -x "$p"; then
            chmod o+x "$p"
            [[ $p == "$dir" ]] || echo "ftp-server.sh: added o+x to $p so $FTP_USER can reach DIR" >&2
        fi
        p=$(dirname "$p")
    done
    runuser -u "$FTP_USER" -- test -w "$dir/root" -a -x "$dir/root" ||
        die "user $FTP_USER cannot reach $dir/root"
    echo "$dir/root" >"$dir/root.path"

    case $kind in
    vsftpd-*)
        write_vsftpd_conf "$kind" "$dir" "$port"
        # Foreground server as our background child; stdio to a file so callers
        # reading our stdout are not held open by the server.
        /usr/sbin/vsftpd "$dir/vsftpd.conf" </dev/null >"$dir/server.out" 2>&1 &
        pid=$!
        ;;
    proftpd*)
        write_proftpd_conf "$kind" "$dir" "$port"
        rm -f "$dir/proftpd.scoreboard" "$dir/proftpd.scoreboard.lck"
        # -n: no daemon (foreground); -q: quiet startup; -c: our config only.
        "$PROFTPD_ROOT/usr/sbin/proftpd" -n -q -c "$dir/proftpd.conf" </dev/null >"$dir/server.out" 2>&1 &
        pid=$!
        ;;
    pure-ftpd)
        write_pureftpd_db "$dir"
        pureftpd_args "$dir" "$port"
        rm -f "$dir/pure-ftpd.pid"
        # Without -B it stays in the foreground; the command line is kept for debugging.
        printf '%q ' "$PUREFTPD_ROOT/usr/sbin/pure-ftpd" "${PUREFTPD_ARGS[@]}" >"$dir/pure-ftpd.cmdline"
        echo >>"$dir/pure-ftpd.cmdline"
        "$PUREFTPD_ROOT/usr/sbin/pure-ftpd" "${PUREFTPD_ARGS[@]}" </dev/null >"$dir/server.out" 2>&1 &
        pid=$!
        ;;
    pyftpdlib)
        # Loads the key as root, binds, then runs as the test user; FERRY_QUIRKS passes through.
        /usr/bin/python3 "$SCRIPTS/quirk-ftp-server.py" --host "$HOST" --port "$port" \
            --pasv-count "$PASV_COUNT" --root "$dir/root" --user "$FTP_USER" --password "$FTP_PASSWORD" \
            --cert "$dir/certs/server.pem" --key "$dir/certs/server.key" --log "$dir/pyftpdlib.log" \
            --run-as "$FTP_USER" </dev/null >"$dir/server.out" 2>&1 &
        pid=$!
        ;;
    esac
    echo "$pid" >"$dir/server.pid"

    # Wait (bounded) until the port accepts connections; bail out if the server died.
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! alive "$pid"; then
            echo "ftp-server.sh: $kind exited during startup; $dir/server.out:" >&2
            tail -n 20 "$dir/server.out" >&2 || true
            rm -f "$dir/server.pid"
            exit 1
        fi
        port_open "$port" && break
        sleep 0.1
    done
    if ! port_open "$port"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/server.pid"
        die "$kind did not accept connections on $HOST:$port within ${START_TIMEOUT}s (see $dir/server.out)"
    fi

    cat >"$dir/server.env" <<EOF
KIND=$kind
HOST=$HOST
PORT=$port
PASV_MIN=$((port + 1))
PASV_MAX=$((port + PASV_COUNT))
USER=$FTP_USER
PASSWORD=$FTP_PASSWORD
ROOT=$dir/root
CA=$dir/certs/ca.pem
PID=$pid
QUIRKS=${FERRY_QUIRKS:-}
EOF
    echo "$pid $port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid p pids i
    [[ -f $dir/server.pid ]] || { echo "ftp-server.sh: no server.pid in $dir (not running)" >&2; return 0; }
    pid=$(cat "$dir/server.pid")
    [[ $pid =~ ^[0-9]+$ ]] || die "bad pid in $dir/server.pid"
    if alive "$pid"; then
        # The master and its session processes (they outlive a killed vsftpd listener).
        mapfile -t pids < <(descendants "$pid")
        kill -TERM "$pid" "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        # Whatever ignored TERM within 5 s gets KILL.
        for p in "$pid" "${pids[@]}"; do
            if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
        done
        for ((i = 0; i < 20; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then die "pid $pid did not exit"; fi
    fi
    # ProFTPD and Pure-FTPd leave their own pid files behind when killed.
    rm -f "$dir/server.pid" "$dir/proftpd.pid" "$dir/pure-ftpd.pid"
}

# SIGKILL every descendant of the master (vsftpd, ProFTPD, Pure-FTPd: one process tree per
# session) but not the master itself, which keeps accepting. pyftpdlib serves every session
# in one process: it gets SIGUSR1 and drops all its connections without a reply.
cmd_kill_sessions() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid pids p i
    [[ -f $dir/server.pid ]] || die "no server.pid in $dir (not running)"
    pid=$(cat "$dir/server.pid")
    [[ $pid =~ ^[0-9]+$ ]] || die "bad pid in $dir/server.pid"
    alive "$pid" || die "server pid $pid is not running"
    if grep -qx 'KIND=pyftpdlib' "$dir/server.env" 2>/dev/null; then
        kill -USR1 "$pid"
        # It polls for the signal every 50 ms.
        sleep 0.2
        return 0
    fi
    mapfile -t pids < <(descendants "$pid")
    [[ ${#pids[@]} -eq 0 ]] && return 0
    kill -KILL "${pids[@]}" 2>/dev/null || true
    # Return once they are gone (zombies count as gone), so the caller's next step sees it.
    for ((i = 0; i < 50; i++)); do
        for p in "${pids[@]}"; do alive "$p" && break; done
        alive "$p" || break
        sleep 0.05
    done
    echo "${pids[*]}"
}

[[ $# -ge 1 ]] || usage
action=$1
shift
case $action in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
kill-sessions) cmd_kill_sessions "$@" ;;
*) usage ;;
esac
