#!/usr/bin/env bash
# ferry's main job, as far as it is built: validate the shipped example
# configuration (servers, mail, four claims-exchange jobs) and show when each
# job would run. The example reads its secrets from the environment; these
# placeholders stand in for them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
export CH_PASSWORD="${CH_PASSWORD:-demo-placeholder}"
export PAYER_PASSWORD="${PAYER_PASSWORD:-demo-placeholder}"
export SMTP_PASSWORD="${SMTP_PASSWORD:-demo-placeholder}"
echo "\$ ferry --config examples/ferry.yaml check"
./target/debug/ferry --config examples/ferry.yaml check
