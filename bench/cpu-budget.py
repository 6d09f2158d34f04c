#!/usr/bin/env python3
"""Where the CPU goes when small files move: the evidence for what bounds
the small-file rows of bench/compare.py.

Run as root after bench/compare.py has installed the tools:

    python3 bench/cpu-budget.py              # 1000 x 10 KiB, each way, 3 reps
    python3 bench/cpu-budget.py --files 200 --reps 1

For ferry and each peer, against the same vsftpd (explicit FTPS, PROT P,
require_ssl_reuse=YES, 4 sessions), it prints per file: the client's own
CPU (user + system, from /usr/bin/time), the CPU everything else used
meanwhile (the vsftpd session processes and the kernel work they cause,
from /proc/stat), and the time the two cores sat idle. Medians of `reps`.
The machine has 2 cores, so a run cannot be faster than
(client + server CPU) / 2 per file, whatever it waits for.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, idle


def timed_with_cpu(cmd, env=None, cwd=None):
    """(seconds, client CPU s, system busy s, idle s) of one process."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    hz = os.sysconf("SC_CLK_TCK")
    b0, i0 = cpu_times()
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%U %S", "-o", tf.name, *cmd], env=env, cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    b1, i1 = cpu_times()
    with open(tf.name) as f:
        user, sys_ = (float(x) for x in f.read().split()[-2:])
    os.unlink(tf.name)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-300:]}")
    return dt, user + sys_, (b1 - b0) / hz, (i1 - i0) / hz


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--port", type=int, default=39200)
    ap.add_argument("--tools", default="ferry,lftp,rclone")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cpu-budget.py: run as root (it starts a real FTP server)")
    c.ensure_tools()
    ctx = c.Ctx()
    ctx.reps = args.reps
    ctx.ferry = c.ferry_bin()
    ctx.work = tempfile.mkdtemp(prefix="ferry-cpu-")
    os.chmod(ctx.work, 0o755)
    measured = []
    c.timed = lambda cmd, env=None, cwd=None: (measured.append(timed_with_cpu(cmd, env, cwd))
                                               or (measured[-1][0], 0))
    quiet = {"FERRY_VSFTPD_EXTRA": "log_ftp_protocol=NO\ndebug_ssl=NO\nxferlog_enable=NO"}
    vs = c.Server("vsftpd-explicit", ctx.work, args.port, quiet)
    rows = []
    try:
        src = os.path.join(ctx.work, "small")
        sums = c.make_small(src, args.files, 10 * 1024)
        for direction in ("push", "pull"):
            for tool in args.tools.split(","):
                measured.clear()
                res = c.measure(ctx, f"{args.files} x 10 KiB {'up' if direction == 'push' else 'down'}",
                                vs, direction, sums, src, [tool], "files/s", args.files)
                if isinstance(res[tool], str):
                    rows.append((direction, tool, res[tool]))
                    continue
                med = sorted(measured, key=lambda m: m[0])[len(measured) // 2]
                dt, client, busy, idle = med
                n = args.files
                rows.append((direction, tool, (n / dt, client / n * 1e3, (busy - client) / n * 1e3,
                                               idle / n * 1e3)))
    finally:
        vs.stop()
        shutil.rmtree(ctx.work, ignore_errors=True)
    print()
    print(f"{args.files} x 10 KiB, vsftpd, 4 sessions, 2 cores; per file, median of {args.reps}")
    print()
    print("| direction | tool | files/s | client CPU | server + kernel CPU | both cores idle | bound: (client + server) / 2 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for direction, tool, r in rows:
        way = "up" if direction == "push" else "down"
        if isinstance(r, str):
            print(f"| {way} | {tool} | {r} | | | | |")
            continue
        rate, client, server, idle = r
        bound = 2000 / (client + server)
        print(f"| {way} | {tool} | {rate:.0f} | {client:.2f} ms | {server:.2f} ms | {idle:.2f} ms | "
              f"{bound:.0f} files/s |")


if __name__ == "__main__":
    main()
