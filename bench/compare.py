#!/usr/bin/env python3
"""ferry against lftp, curl and rclone on the same real FTPS servers.

Run as root on a fresh machine (it installs lftp, curl, rclone and GNU time
from Debian, and the test servers through scripts/install-test-deps.sh):

    python3 bench/compare.py                 # the full table (median of 3)
    python3 bench/compare.py --quick         # 200 small files, 64 MiB, 1 rep

Every workload runs each tool in the same run against the same server,
the tools taking turns rep by rep (nothing is deleted between small-file
runs; see `put_aside`):
vsftpd (explicit FTPS, PROT P, require_ssl_reuse=YES, protocol logging off)
for the main table, ProFTPD for the 512 MiB upload against curl and for the
TLS 1.3 small-file upload. Each result is checked by SHA-256 against the
source; a tool whose result does not match is reported FAILED, not timed.
Wall time is measured around the process; peak RSS comes from
/usr/bin/time -v. Nothing leaves 127.0.0.1.

Peers as configured: lftp `mirror --parallel=4` (CA verified); rclone
`copy --transfers 4` with `disable_tls13` (rclone 1.60's Go TLS gets "tls:
illegal parameter" from vsftpd under TLS 1.3) and `no_check_certificate`
(its FTP backend ignores --ca-cert); curl one process per workload (CA
verified), on the big files only: for many small files it reconnects per
file and is not a contender.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
PARALLEL = 4


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    missing = [p for p, b in [("lftp", "lftp"), ("curl", "curl"), ("rclone", "rclone"),
                              ("time", "/usr/bin/time")] if not shutil.which(b)]
    if missing:
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL)
    if not os.path.exists("/opt/ferry-test/proftpd") or not shutil.which("vsftpd"):
        sh(["bash", os.path.join(SCRIPTS, "install-test-deps.sh")])


def ferry_bin():
    if os.environ.get("FERRY_BIN"):
        return os.environ["FERRY_BIN"]
    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    return os.path.join(ROOT, "target", "release", "ferry")


class Server:
    def __init__(self, kind, work, port, extra_env=None):
        self.dir = os.path.join(work, f"srv-{kind}")
        env = dict(os.environ, **(extra_env or {}))
        p = subprocess.run(["bash", os.path.join(SCRIPTS, "ftp-server.sh"), "start", kind,
                            self.dir, str(port)], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"bench/compare.py: cannot start {kind} on port {port}: {p.stderr.strip()}")
        out = p.stdout.split()
        self.pid, self.port = int(out[0]), int(out[1])
        facts = {}
        with open(os.path.join(self.dir, "server.env")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                facts[k] = v
        self.user, self.password = facts["USER"], facts["PASSWORD"]
        self.root, self.ca = facts["ROOT"], facts["CA"]
        self.kind = kind

    def stop(self):
        subprocess.run(["bash", os.path.join(SCRIPTS, "ftp-server.sh"), "stop", self.dir],
                       check=False, capture_output=True)

    def remote(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def fresh_remote(self, rel, aside=None):
        """An empty remote folder owned by the FTP user (the server writes as that user).
        `aside`: the old folder is moved there instead of deleted (see `put_aside`)."""
        p = self.remote(rel)
        if aside and os.path.exists(p):
            put_aside(p, aside)
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
        st = os.stat(self.root)
        os.chown(p, st.st_uid, st.st_gid)
        return p


def put_aside(path, aside):
    """Moves `path` into the folder `aside`, deleted once the workload is done.
    Small-file runs delete nothing while they run: on ext4 without a journal
    (this machine's root), every file created scans past the inodes deleted
    in the last 30-35 s, so a run right after a deletion of thousands of
    files pays for it, and which tool ran after whose deletion would decide
    the table."""
    os.makedirs(aside, exist_ok=True)
    os.rename(path, os.path.join(aside, f"{len(os.listdir(aside))}"))


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def make_small(dir, count, size):
    os.makedirs(dir, exist_ok=True)
    sums = {}
    for i in range(count):
        name = f"f{i:04d}.x12"
        data = os.urandom(size)
        with open(os.path.join(dir, name), "wb") as f:
            f.write(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    old = time.time() - 120
    for name in sums:
        os.utime(os.path.join(dir, name), (old, old))
    return sums


def make_big(path, mib):
    h = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            # Different bytes per MiB, cheaply: a counter in each chunk.
            block = i.to_bytes(8, "little") + chunk[8:]
            f.write(block)
            h.update(block)
    old = time.time() - 120
    os.utime(path, (old, old))
    return {os.path.basename(path): h.hexdigest()}


def check(dir, sums):
    for name, digest in sums.items():
        p = os.path.join(dir, name)
        if not os.path.exists(p) or sha(p) != digest:
            return f"{name} missing or different"
    extra = set(os.listdir(dir)) - set(sums)
    if extra:
        return f"unexpected files: {sorted(extra)[:3]}"
    return None


def timed(cmd, env=None, cwd=None):
    """(seconds, peak RSS KiB) of one process, via GNU time."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], env=env, cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    rss = 0
    with open(tf.name) as f:
        for line in f:
            if "Maximum resident set size" in line:
                rss = int(line.rsplit(":", 1)[1])
    os.unlink(tf.name)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: "
                           f"{(p.stderr or p.stdout).decode(errors='replace')[-600:]}")
    return dt, rss


# --- the tools -------------------------------------------------------------

def ferry_run(ctx, srv, direction, local, remote, tls=None):
    cfg = tempfile.mkdtemp(dir=ctx.work, prefix="ferry-cfg-")
    os.chmod(cfg, 0o700)
    os.makedirs(os.path.join(cfg, "jobs"))
    versions = f"    tls_versions: [\"{tls}\"]\n" if tls else ""
    with open(os.path.join(cfg, "ferry.yaml"), "w") as f:
        f.write(f"servers:\n  s:\n    host: 127.0.0.1\n    port: {srv.port}\n"
                f"    user: {srv.user}\n    password: \"{srv.password}\"\n"
                f"    ca_file: {srv.ca}\n    max_connections: {PARALLEL}\n{versions}"
                f"log:\n  level: warn\n")
    os.chmod(os.path.join(cfg, "ferry.yaml"), 0o600)
    after = "after_push: keep" if direction == "push" else "after_pull: keep"
    with open(os.path.join(cfg, "jobs", "j.yaml"), "w") as f:
        f.write(f"direction: {direction}\nserver: s\nlocal_dir: {local}\n"
                f"remote_dir: {remote}\nstable_for: 0s\n{after}\n")
    try:
        return timed([ctx.ferry, "--config", os.path.join(cfg, "ferry.yaml"), "once", "j"])
    finally:
        shutil.rmtree(cfg, ignore_errors=True)


def lftp_run(ctx, srv, direction, local, remote):
    setup = (f"set ssl:ca-file {srv.ca}; set ftp:ssl-force true; set ftp:ssl-protect-data true;"
             f" set ssl:verify-certificate yes; set net:max-retries 1;"
             f" open -u {srv.user},{srv.password} ftp://127.0.0.1:{srv.port};")
    if direction == "push":
        op = f"mirror -R --parallel={PARALLEL} {local} {remote}"
    else:
        op = f"mirror --parallel={PARALLEL} {remote} {local}"
    return timed(["lftp", "-c", setup + " " + op])


def curl_run(ctx, srv, direction, local, remote, names):
    base = ["curl", "-sS", "--fail", "--ssl-reqd", "--cacert", srv.ca,
            "-u", f"{srv.user}:{srv.password}"]
    url = f"ftp://127.0.0.1:{srv.port}{remote}/"
    if direction == "push":
        files = ",".join(os.path.join(local, n) for n in names)
        glob = "{" + files + "}" if len(names) > 1 else files
        return timed(base + ["-T", glob, url])
    if len(names) == 1:
        return timed(base + [url + names[0], "-o", os.path.join(local, names[0])])
    # f0000.x12 .. : one connection, sequential, as curl does with a URL glob.
    return timed(base + [url + f"f[0000-{len(names) - 1:04d}].x12",
                         "-o", os.path.join(local, "f#1.x12")])


def rclone_run(ctx, srv, direction, local, remote):
    obscured = subprocess.run(["rclone", "obscure", srv.password], check=True,
                              capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, RCLONE_CONFIG_B_TYPE="ftp", RCLONE_CONFIG_B_HOST="127.0.0.1",
               RCLONE_CONFIG_B_PORT=str(srv.port), RCLONE_CONFIG_B_USER=srv.user,
               RCLONE_CONFIG_B_PASS=obscured, RCLONE_CONFIG_B_EXPLICIT_TLS="true",
               RCLONE_CONFIG_B_NO_CHECK_CERTIFICATE="true", RCLONE_CONFIG_B_DISABLE_TLS13="true",
               RCLONE_CONFIG="/dev/null")
    src, dst = (local, f"B:{remote}") if direction == "push" else (f"B:{remote}", local)
    return timed(["rclone", "copy", src, dst, "--transfers", str(PARALLEL),
                  "--checkers", str(PARALLEL)], env=env)


# --- workloads ---------------------------------------------------------------

class Ctx:
    pass


def measure(ctx, label, srv, direction, sums, src_dir, tools, unit, amount, tls=None):
    """Runs each tool `reps` times, the tools taking turns (a slow minute of
    the machine's costs each about the same); returns {tool: (median s, rss
    KiB) or error}."""
    names = sorted(sums)
    # Many small files: nothing is deleted while the benchmark runs (put_aside).
    aside = os.path.join(ctx.work, "aside") if len(names) > 1 else None
    times = {t: [] for t in tools}
    rss = {t: 0 for t in tools}
    errs = {}
    for _ in range(ctx.reps):
        for tool in tools:
            if tool in errs:
                continue
            remote = "/bench"
            remote_dir = srv.fresh_remote(remote, aside)
            if direction == "push":
                local, check_dir = src_dir, remote_dir
            else:
                # The source is placed on the server; the client downloads it.
                for n in names:
                    shutil.copyfile(os.path.join(src_dir, n), os.path.join(remote_dir, n))
                    st = os.stat(srv.root)
                    os.chown(os.path.join(remote_dir, n), st.st_uid, st.st_gid)
                local = tempfile.mkdtemp(dir=ctx.work, prefix="dl-")
                check_dir = local
            try:
                if tool == "ferry":
                    dt, r = ferry_run(ctx, srv, direction, local, remote, tls)
                elif tool == "lftp":
                    dt, r = lftp_run(ctx, srv, direction, local, remote)
                elif tool == "curl":
                    dt, r = curl_run(ctx, srv, direction, local, remote, names)
                elif tool == "rclone":
                    dt, r = rclone_run(ctx, srv, direction, local, remote)
                bad = check(check_dir, sums)
                if bad:
                    errs[tool] = f"FAILED check: {bad}"
                    continue
                times[tool].append(dt)
                rss[tool] = max(rss[tool], r)
                print(f"  {label:<28} {tool:<7} {amount / dt:.0f} {unit} ({dt:.2f} s)",
                      file=sys.stderr, flush=True)
            except RuntimeError as e:
                errs[tool] = f"FAILED: {e}".replace("\n", " ")[:200]
            finally:
                if direction == "pull":
                    if aside:
                        put_aside(local, aside)
                    shutil.rmtree(local, ignore_errors=True)
    results = {}
    for tool in tools:
        results[tool] = errs.get(tool) or (statistics.median(times[tool]), rss[tool])
        shown = results[tool] if isinstance(results[tool], str) else \
            f"{amount / results[tool][0]:.0f} {unit} (median {results[tool][0]:.2f} s, RSS {rss[tool] // 1024} MiB)"
        print(f"  {label:<28} {tool:<7} {shown}", file=sys.stderr, flush=True)
    return results


def rate(res, amount):
    return None if isinstance(res, str) else amount / res[0]


def row(label, results, amount, unit, peers):
    cells = [label]
    f = rate(results.get("ferry"), amount)
    cells.append("FAILED" if f is None else f"{f:.0f} {unit}")
    best, best_tool = None, None
    for p in peers:
        r = rate(results.get(p), amount) if p in results else None
        cells.append("-" if p not in results else ("FAILED" if r is None else f"{r:.0f}"))
        if r is not None and (best is None or r > best):
            best, best_tool = r, p
    cells.append("-" if best is None else f"{best:.0f} ({best_tool})")
    cells.append("-" if (best is None or f is None) else f"{f / best:.2f}")
    rss = results.get("ferry")
    cells.append("-" if isinstance(rss, str) or rss is None else f"{rss[1] // 1024} MiB")
    return "| " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 small files, 64 MiB, 1 rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--port", type=int, default=39100)
    ap.add_argument("--tools", default="ferry,lftp,curl,rclone")
    ap.add_argument("--huge-gib", type=int, default=0,
                    help="also move one file of this many GiB each way with ferry alone "
                         "(peak RSS for a file far larger than memory buffers; needs 3x the space)")
    args = ap.parse_args()
    if args.quick:
        args.small, args.big_mib, args.reps = 200, 64, 1
    if os.geteuid() != 0:
        sys.exit("bench/compare.py: run as root (it starts real FTP servers)")
    ensure_tools()
    ctx = Ctx()
    ctx.reps = args.reps
    ctx.ferry = ferry_bin()
    ctx.work = tempfile.mkdtemp(prefix="ferry-bench-")
    os.chmod(ctx.work, 0o755)
    tools = args.tools.split(",")
    peers = [t for t in tools if t != "ferry"]
    quiet = {"FERRY_VSFTPD_EXTRA": "log_ftp_protocol=NO\ndebug_ssl=NO\nxferlog_enable=NO"}
    servers = []
    try:
        small_dir = os.path.join(ctx.work, "small")
        small = make_small(small_dir, args.small, 10 * 1024)
        big_dir = os.path.join(ctx.work, "big")
        os.makedirs(big_dir)
        big = make_big(os.path.join(big_dir, "remit.835"), args.big_mib)
        print(f"data: {args.small} x 10 KiB, {args.big_mib} MiB; {ctx.reps} rep(s); "
              f"ferry {ctx.ferry}", file=sys.stderr)
        vs = Server("vsftpd-explicit", ctx.work, args.port, quiet)
        servers.append(vs)
        pro = Server("proftpd", ctx.work, args.port + 30)
        servers.append(pro)
        n, mib = args.small, args.big_mib
        table = []
        no_curl = [t for t in tools if t != "curl"]
        for label, srv, d, sums, src, amount, unit, use, tls in [
            (f"{n} x 10 KiB up", vs, "push", small, small_dir, n, "files/s", no_curl, None),
            (f"{n} x 10 KiB down", vs, "pull", small, small_dir, n, "files/s", no_curl, None),
            (f"{mib} MiB up", vs, "push", big, big_dir, mib, "MiB/s", tools, None),
            (f"{mib} MiB down", vs, "pull", big, big_dir, mib, "MiB/s", tools, None),
            (f"{mib} MiB up, ProFTPD", pro, "push", big, big_dir, mib, "MiB/s",
             [t for t in tools if t in ("ferry", "curl")], None),
        ]:
            res = measure(ctx, label, srv, d, sums, src, use, unit, amount, tls)
            table.append(row(label, res, amount, unit, peers))
        # TLS 1.3 against ProFTPD: ferry's 1.3 time against its own 1.2 time.
        t12 = measure(ctx, f"{n} up ProFTPD TLS 1.2", pro, "push", small, small_dir,
                      ["ferry"], "files/s", n, "1.2")["ferry"]
        t13 = measure(ctx, f"{n} up ProFTPD TLS 1.3", pro, "push", small, small_dir,
                      ["ferry"], "files/s", n, "1.3")["ferry"]
        # What a download that is fsynced before it is placed cannot beat on
        # this disk: the same bytes written and fdatasynced (curl, lftp and
        # rclone do not sync).
        durable = []
        for _ in range(ctx.reps):
            out = os.path.join(ctx.work, "durable.bin")
            t0 = time.monotonic()
            sh(["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={mib}", "conv=fdatasync"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            durable.append(time.monotonic() - t0)
            os.unlink(out)
        huge = []
        if args.huge_gib:
            hdir = os.path.join(ctx.work, "huge")
            os.makedirs(hdir)
            hsum = make_big(os.path.join(hdir, "archive.835"), args.huge_gib * 1024)
            for d in ("push", "pull"):
                r = measure(ctx, f"{args.huge_gib} GiB {'up' if d == 'push' else 'down'}", vs, d,
                            hsum, hdir, ["ferry"], "MiB/s", args.huge_gib * 1024)["ferry"]
                huge.append((d, r))
            shutil.rmtree(hdir, ignore_errors=True)
        print()
        print(f"{n} x 10 KiB and {mib} MiB, median of {ctx.reps}, max_connections {PARALLEL}, "
              f"every result SHA-256 checked")
        print()
        print("| workload | ferry | " + " | ".join(peers) + " | best peer | ferry / best | ferry peak RSS |")
        print("|---|---:|" + "---:|" * len(peers) + "---:|---:|---:|")
        for line in table:
            print(line)
        for d, r in huge:
            way = "up" if d == "push" else "down"
            if isinstance(r, str):
                print(f"{args.huge_gib} GiB {way}: {r}")
            else:
                print(f"{args.huge_gib} GiB {way} (ferry, vsftpd): {args.huge_gib * 1024 / r[0]:.0f} MiB/s, "
                      f"peak RSS {r[1] // 1024} MiB")
        print()
        print(f"Durable write of {mib} MiB on this disk (dd conv=fdatasync, median of {ctx.reps}): "
              f"{statistics.median(durable):.2f} s, {mib / statistics.median(durable):.0f} MiB/s "
              f"(runs {', '.join(f'{d:.2f}' for d in durable)} s)")
        if not isinstance(t12, str) and not isinstance(t13, str):
            print()
            print(f"TLS 1.3 against ProFTPD, {n} x 10 KiB up: {t13[0]:.2f} s against "
                  f"{t12[0]:.2f} s with TLS 1.2 ({t13[0] / t12[0]:.2f}x; target at most 1.5x)")
        else:
            print(f"TLS 1.2/1.3 against ProFTPD: {t12} / {t13}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(ctx.work, ignore_errors=True)


if __name__ == "__main__":
    main()
