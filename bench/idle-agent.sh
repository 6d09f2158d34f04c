#!/usr/bin/env bash
# Benchmark: an idle agent with 500 jobs (every one scheduled every minute,
# 100 of them watching a folder), all folders empty. Prints resident memory
# and CPU use over a 60 s window. Target: < 40 MiB and < 1% of one core.
#   bash bench/idle-agent.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cargo build --release --quiet
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/jobs"
cat > "$dir/ferry.yaml" <<YAML
log: { level: warn }
servers:
  partner:
    host: 127.0.0.1
    port: 1
    password: unused
    pin_sha256: "$(printf 'AB%.0s' $(seq 32))"
YAML
for i in $(seq -w 1 500); do
    watch=""
    [ "$i" -le 100 ] && watch="watch: true"
    cat > "$dir/jobs/job-$i.yaml" <<YAML
direction: push
server: partner
local_dir: ../out/$i
remote_dir: /in
schedule: "* * * * *"
$watch
YAML
done
./target/release/ferry --config "$dir/ferry.yaml" check > /dev/null
./target/release/ferry --config "$dir/ferry.yaml" run 2> "$dir/agent.log" &
pid=$!
sleep 5 # start-up: rescans, watches
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
peak=0
for _ in $(seq "$secs"); do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 1
done
c1=$(cpu); t1=$(date +%s.%N)
runs=$(grep -c . "$dir/agent.log" || true)
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" -v peak="$peak" -v secs="$secs" 'BEGIN {
    printf "idle agent, 500 jobs (every minute), 100 watched folders, %d s window\n", secs
    printf "  peak resident memory: %.1f MiB (target < 40 MiB)\n", peak / 1024
    printf "  CPU: %.2f%% of one core (target < 1%%)\n", 100 * (c1 - c0) / hz / (t1 - t0)
}'
echo "  warnings or errors logged: $runs"
