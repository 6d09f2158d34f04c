#!/usr/bin/env bash
# ferry's main job end to end, everything it needs started for it: the
# README's first command (cargo run --example demo) with a build first.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --example demo -- "$@"
