#!/usr/bin/env bash
# The one test command: install what the tests need, then run every test.
# README.md and .ci/run both call this, so a newcomer runs what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real FTPS/SMTP servers for the interop tier come from Debian; installing
# them needs root (CI runs as root). Without root the fast tier still runs.
if [ "$(id -u)" = 0 ]; then
    bash scripts/install-test-deps.sh
    # The servers themselves work (TLS, session reuse, HASH) before ferry meets them.
    bash scripts/ftp-server-selftest.sh
    bash scripts/smtp-server-selftest.sh
else
    echo "test.sh: not root, skipping package installation (interop tests need it)" >&2
fi

# The demo test runs the real example binary, which `cargo test` alone
# builds only as a test harness.
cargo build --examples
cargo test --all-targets --no-fail-fast "$@"

# The kill -9 campaign in its short form (the README shows the long one):
# push batches killed mid-run and servers restarted, every file checked
# against a manifest on the real servers. Needs root, like the servers.
if [ "$(id -u)" = 0 ]; then
    python3 bench/kill-campaign.py --quick --cycles 3 --files 40 \
        --campaign push-vsftpd --campaign push-proftpd --campaign push-consume \
        --campaign pull-vsftpd-delete --campaign pull-proftpd-move --campaign agent-watch
fi
