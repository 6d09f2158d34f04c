#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz.rs for FERRY_FUZZ_SECS seconds each
# (default 600), two at a time, and prints their figures. Crashes are kept in
# target/fuzz-crashes/ and make this script exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FERRY_FUZZ_SECS:-600}
cargo test --release --test fuzz --no-run
run() {
    FERRY_FUZZ_SECS=$secs cargo test --release --test fuzz -- --exact "$1" --nocapture 2>&1 | grep -E '^fuzz |seed|panicked'
}
rc=0
run fuzz_the_configuration_loader_never_panics & a=$!
run fuzz_the_listing_parser_never_panics & b=$!
wait $a || rc=1; wait $b || rc=1
run fuzz_the_hash_reply_parser_never_panics & a=$!
run fuzz_the_ftp_reply_reader_never_panics_or_hangs & b=$!
wait $a || rc=1; wait $b || rc=1
run fuzz_the_x12_envelope_reader_never_panics || rc=1
exit $rc
