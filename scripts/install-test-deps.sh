#!/usr/bin/env bash
# Install what the interop test tier needs: vsftpd (installed), ProFTPD and
# Pure-FTPd (unpacked only, never installed), pyftpdlib with pyOpenSSL (for
# scripts/quirk-ftp-server.py), aiosmtpd, openssl, lftp/curl for sanity
# checks, promtool (package prometheus) to lint ferry's /metrics, and pyx12
# 4.0.0 from PyPI in a venv (the X12 oracle of the claims tests).
# Idempotent: work already done is skipped.
#
# Usage: sudo scripts/install-test-deps.sh
# Env:   FERRY_TEST_CACHE  cache root (default /opt/ferry-test)
#
# Result: ProFTPD binary at $FERRY_TEST_CACHE/proftpd/root/usr/sbin/proftpd,
#         all its modules (core + crypto) in $FERRY_TEST_CACHE/proftpd/modules;
#         Pure-FTPd at $FERRY_TEST_CACHE/pure-ftpd/root/usr/sbin/pure-ftpd
#         (and pure-pw in .../usr/bin/pure-pw); pyx12 in $FERRY_TEST_CACHE/pyx12-venv.
set -euo pipefail

# Root is needed for apt and, later, for the servers themselves (PAM, setuid).
if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps.sh: must run as root" >&2
    exit 1
fi

CACHE=${FERRY_TEST_CACHE:-/opt/ferry-test}
PROFTPD_DIR=$CACHE/proftpd
# proftpd-core holds mod_digest.so; proftpd-mod-crypto holds mod_tls.so (checked on bookworm).
PROFTPD_PKGS=(proftpd-core proftpd-mod-crypto)
PUREFTPD_DIR=$CACHE/pure-ftpd
# pure-ftpd holds the server and pure-pw; pure-ftpd-common (init wrapper, perl) is not needed.
PUREFTPD_PKGS=(pure-ftpd)
# vsftpd is the one FTP server we really install; the others conflict with it as packages.
# python3-pyftpdlib + python3-openssl: the scriptable quirk server (TLS_FTPHandler needs pyOpenSSL).
# prometheus: only for promtool, which checks the /metrics text (tests/metrics.rs); its service
# is kept from starting by the policy-rc.d below.
APT_PKGS=(vsftpd python3-aiosmtpd python3-pyftpdlib python3-openssl openssl lftp curl ca-certificates prometheus)

# No prompts from debconf, ever.
export DEBIAN_FRONTEND=noninteractive

log() { echo "install-test-deps: $*" >&2; }

# True when every named package is installed (dpkg status "install ok installed").
all_installed() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $st == "install ok installed" ]] || return 1
    done
}

# True when the unpacked ProFTPD tree is complete and all its libraries resolve.
proftpd_ready() {
    local f
    for f in "$PROFTPD_DIR/root/usr/sbin/proftpd" "$PROFTPD_DIR/modules/mod_tls.so" \
        "$PROFTPD_DIR/modules/mod_digest.so"; do
        [[ -e $f ]] || return 1
        # ldd prints "not found" for every missing shared library.
        if ldd "$f" 2>/dev/null | grep -q 'not found'; then return 1; fi
    done
}

# True when the unpacked Pure-FTPd (server and pure-pw) is complete and its libraries resolve.
pureftpd_ready() {
    local f
    for f in "$PUREFTPD_DIR/root/usr/sbin/pure-ftpd" "$PUREFTPD_DIR/root/usr/bin/pure-pw"; do
        [[ -x $f ]] || return 1
        if ldd "$f" 2>/dev/null | grep -q 'not found'; then return 1; fi
    done
}

# Download debs ($2...) into $1/debs and dpkg -x them into $1/root (fresh); sets the global
# array lib_deps to their missing lib* runtime dependencies (first alternative only).
unpack_debs() {
    local dir=$1 deb dep
    shift
    mkdir -p "$dir/debs"
    rm -rf "$dir/root"
    rm -f "$dir"/debs/*.deb
    log "downloading $*"
    # apt-get download writes to the current directory; run it as root to avoid the _apt sandbox warning.
    (cd "$dir/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@")
    mkdir -p "$dir/root"
    lib_deps=()
    for deb in "$dir"/debs/*.deb; do
        dpkg -x "$deb" "$dir/root"
        # Runtime libraries from Depends (first alternative, version dropped); only lib* packages,
        # which never conflict with vsftpd, and not the server package itself.
        while IFS= read -r dep; do
            dep=${dep%%|*}
            dep=${dep%%(*}
            dep=${dep// /}
            dep=${dep%%:*}
            # Only the missing ones: installing present ones would upgrade them as a side effect.
            if [[ $dep == lib* ]] && ! all_installed "$dep"; then lib_deps+=("$dep"); fi
        done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n')
    done
}

apt_updated=0
# apt-get update at most once per run, and only when something must be installed.
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
}

# Keep package postinst scripts from starting a system vsftpd on port 21
# (a container may have no policy-rc.d); removed again on exit.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi

# 1. Packages installed for real.
if all_installed "${APT_PKGS[@]}"; then
    log "packages already installed: ${APT_PKGS[*]}"
else
    apt_update_once
    log "installing ${APT_PKGS[*]}"
    apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
fi

# 2. ProFTPD unpacked (dpkg -x), never installed: it conflicts with vsftpd.
if proftpd_ready; then
    log "ProFTPD already unpacked in $PROFTPD_DIR"
else
    apt_update_once
    rm -rf "$PROFTPD_DIR/modules"
    unpack_debs "$PROFTPD_DIR" "${PROFTPD_PKGS[@]}"
    mkdir -p "$PROFTPD_DIR/modules"
    # One folder with the .so files of both packages, for ProFTPD's ModulePath.
    cp -a "$PROFTPD_DIR"/root/usr/lib/proftpd/*.so "$PROFTPD_DIR/modules/"
    if [[ ${#lib_deps[@]} -gt 0 ]]; then
        log "installing ProFTPD runtime libraries: ${lib_deps[*]}"
        apt-get install -y -qq --no-install-recommends "${lib_deps[@]}" >/dev/null
    fi
    # Record the version unpacked, for reports and debugging.
    dpkg-deb -f "$PROFTPD_DIR"/debs/proftpd-core_*.deb Version >"$PROFTPD_DIR/VERSION"
    if ! proftpd_ready; then
        log "ProFTPD unpacked but not usable; missing libraries:"
        ldd "$PROFTPD_DIR/root/usr/sbin/proftpd" "$PROFTPD_DIR"/modules/mod_{tls,digest}.so | grep 'not found' >&2 || true
        exit 1
    fi
    log "ProFTPD $(cat "$PROFTPD_DIR/VERSION") unpacked in $PROFTPD_DIR"
fi

# 3. Pure-FTPd unpacked (dpkg -x), never installed: it conflicts with vsftpd (ftp-server).
if pureftpd_ready; then
    log "Pure-FTPd already unpacked in $PUREFTPD_DIR"
else
    apt_update_once
    unpack_debs "$PUREFTPD_DIR" "${PUREFTPD_PKGS[@]}"
    if [[ ${#lib_deps[@]} -gt 0 ]]; then
        log "installing Pure-FTPd runtime libraries: ${lib_deps[*]}"
        apt-get install -y -qq --no-install-recommends "${lib_deps[@]}" >/dev/null
    fi
    dpkg-deb -f "$PUREFTPD_DIR"/debs/pure-ftpd_*.deb Version >"$PUREFTPD_DIR/VERSION"
    if ! pureftpd_ready; then
        log "Pure-FTPd unpacked but not usable; missing libraries:"
        ldd "$PUREFTPD_DIR/root/usr/sbin/pure-ftpd" "$PUREFTPD_DIR/root/usr/bin/pure-pw" | grep 'not found' >&2 || true
        exit 1
    fi
    log "Pure-FTPd $(cat "$PUREFTPD_DIR/VERSION") unpacked in $PUREFTPD_DIR"
fi

# 4. pyx12 (PyPI; not packaged by Debian): the X12 oracle of the claims tests
# (scripts/pyx12-999.py validates 837s and writes their 999). A venv, so the
# system Python stays as Debian ships it.
PYX12_VENV=$CACHE/pyx12-venv
PYX12_VERSION=4.0.0
if [[ -x $PYX12_VENV/bin/python ]] && "$PYX12_VENV/bin/python" -c "import pyx12.x12n_document" 2>/dev/null; then
    log "pyx12 already in $PYX12_VENV"
else
    if ! all_installed python3-venv; then
        apt_update_once
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    log "creating $PYX12_VENV with pyx12 $PYX12_VERSION"
    /usr/bin/python3 -m venv "$PYX12_VENV"
    "$PYX12_VENV/bin/pip" install -q "pyx12==$PYX12_VERSION"
fi

log "vsftpd:  $(command -v vsftpd || echo /usr/sbin/vsftpd) ($(dpkg-query -W -f='${Version}' vsftpd))"
log "proftpd: $PROFTPD_DIR/root/usr/sbin/proftpd, modules in $PROFTPD_DIR/modules"
log "pure-ftpd: $PUREFTPD_DIR/root/usr/sbin/pure-ftpd ($(cat "$PUREFTPD_DIR/VERSION"))"
log "pyftpdlib: $(dpkg-query -W -f='${Version}' python3-pyftpdlib), pyOpenSSL $(dpkg-query -W -f='${Version}' python3-openssl)"
log "pyx12: $PYX12_VENV/bin/python ($("$PYX12_VENV/bin/pip" show pyx12 2>/dev/null | sed -n 's/^Version: //p'))"
log "promtool: $(command -v promtool) ($(dpkg-query -W -f='${Version}' prometheus))"
log "aiosmtpd: /usr/bin/python3 -m aiosmtpd ($(dpkg-query -W -f='${Version}' python3-aiosmtpd))"
log "done"
