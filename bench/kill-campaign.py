#!/usr/bin/env python3
"""Fault campaign: is a claim file ever lost, doubled or half-delivered across kill -9?

ferry promises (SPEC.md, Guarantees 1-4) that a claim file is never lost,
never doubled and never left half-delivered under its final name, whatever
happens to the ferry process or to the partner's server. This script tries
hard to break that promise against REAL FTPS servers (scripts/ftp-server.sh)
and counts what it finds. Python 3 standard library only.

Usage (as root; scripts/install-test-deps.sh must have run):

    python3 bench/kill-campaign.py                     # every push campaign, 50 cycles x 200 files
    python3 bench/kill-campaign.py --quick --cycles 3 --files 40 --campaign all    # CI smoke
    python3 bench/kill-campaign.py --campaign push-vsftpd --campaign pull-vsftpd-delete --seed 7
    python3 bench/kill-campaign.py --self-check        # the counting sees fabricated failures

Options:
    --campaign NAME   repeatable; a name below, or `all`, `push` or `pull`
                      (every campaign of that family). Default: every push
                      campaign (push-vsftpd, push-proftpd, push-pure-ftpd,
                      push-consume).
    --cycles N        kill cycles per campaign (default 50)
    --files N         small files per batch (default 200)
    --quick           small files only, except ONE big file per campaign (in
                      cycle 1; the calibration sends one more); and clean runs
                      stop after 3 in a row that changed nothing, the final
                      agent after 25 s without change (both said in the notes)
    --seed N          seeds sizes, contents and moments (default: random,
                      printed, so that a run can be repeated; thread timing
                      still varies)
    --keep            keep the work folder even when everything is clean
    --json FILE       also write the table (with notes, calibration, exit
                      codes of the clean runs) as JSON
    --no-consumes-key do not write `consumes: true` for push-consume (default:
                      written; if `ferry check` refuses it, the campaign runs
                      without it and the notes say so)
    --wait-bin SECS   wait this long for the ferry binary to appear (default 0)
    --self-check      fabricate one failure of each kind in a temp folder and
                      check that the counting finds exactly those (no servers)

The ferry binary is $FERRY_BIN, else target/release/ferry if it exists, else
target/debug/ferry. It is copied into the work folder first, so that a
rebuild during the campaign does not mix two builds.

Campaigns
---------
push-vsftpd, push-proftpd, push-pure-ftpd
    A push job (`upload: temp_rename`, `after_push: archive`, `verify: auto`,
    `stable_for: 0s`, retry 3 attempts 100ms..1s; server `max_connections: 2`,
    `timeout: 10s`) to vsftpd (kind vsftpd-explicit), ProFTPD (kind
    proftpd-stock, compiled defaults: no REST on STOR, no overwrite, when
    scripts/ftp-server.sh knows it, else proftpd) and Pure-FTPd (kind
    pure-ftpd; reported as skipped when scripts/ftp-server.sh does not know
    it). Each cycle drops a batch of --files new files of 1-30 KiB plus two of
    30-80 MiB (X12-looking text with LF and CR bytes, so an ASCII-mode
    transfer shows as corruption), each with unique content and a unique name
    c<cycle>-<n>.837, then runs `ferry once push` and SIGKILLs it at a moment
    drawn uniformly within the time a full run of such a batch takes. That
    time is measured first with a separate job `calib` (own folders, /calib on
    the server, its files not counted): one run of --files small files, one of
    the big files alone; a cycle's window is the first, plus the second when
    the cycle has big files. Every 5th cycle (and the last one when
    --cycles < 5) ferry is not killed: once ferry's first session is up, the
    server's session processes are SIGKILLed (vsftpd, ProFTPD) at one random
    moment and the whole server is restarted (stop + start, same folder and
    port, files kept) at a later one, while ferry runs to its end. After all
    cycles: `ferry once push` until it exits 0 (at most 10 runs), then one
    final run.
push-consume
    Like push-vsftpd, but the partner's inbox consumes what it receives: a
    mover takes every final file (not *.part, not a dot-file) out of the inbox
    as soon as it appears (`scripts/consume-inbox.py INBOX TAKEN` if that
    script exists and keeps running, else a built-in 10 ms polling mover) into
    a "taken" folder outside the FTP root, appending a counter on name
    collisions (c1-3.1.837), so that doubles stay visible. The server gets
    `consumes: true` (see --no-consumes-key).
pull-vsftpd-delete, pull-vsftpd-keep, pull-proftpd-delete, pull-proftpd-move
    The partner drops each cycle's batch (same shape) into the server's
    /outbound (written to a dot-temp inside DIR/root/outbound, chowned to the
    FTP user, renamed into place: the partner never shows a half file, so the
    pull job uses `stable_for: 0s`); ferry pulls it into a local inbound
    folder with after_pull delete | keep | move:/outbound/processed and is
    SIGKILLed mid-run every cycle (window measured as for push); then the
    clean runs.
agent-watch
    `ferry run` with a push job (`watch: true`, `stable_for: 1s`,
    `rescan_interval: 10s`) while a writer thread keeps dropping files into
    the outbound folder (dot-temp, then rename; each cycle's files trickle in
    over the agent's life, big ones first); the agent is SIGKILLed and
    restarted --cycles times at random moments. At the end the writer is
    stopped and a fresh agent runs until the outbound folder is empty (or
    120 s), then gets SIGTERM (it must exit 0).

What is counted (one row per campaign)
--------------------------------------
files      claim files in the manifest (calibration files excluded)
lost       no byte-identical copy anywhere (server inbox and taken folder for
           push, local inbound for pull), no half copy under its name (that is
           `partial`), and not still waiting (outbound folder for push; the
           remote folder for pull). A file moved to /outbound/processed or
           deleted from the server without having arrived locally is lost.
doubled    per file, the extra deliveries: the largest of byte-identical
           copies - 1, `delivered` rows in `ferry history --json` for the name
           - 1, and (push) the times the server itself wrote that final name
           (uploads onto it or renames onto it: vsftpd.log; for ProFTPD an
           ExtendedLog added through FERRY_PROFTPD_EXTRA) - 1. Pure-FTPd
           keeps no such log: there, copies and history only.
partial    final-name files (not *.part, not dot-files) whose bytes match no
           manifest file: a half or corrupted delivery, or a stray
temp_left  *.part files left on the server, or dot-part / *.part files left
           in the local inbound folder (pull)
stuck      after the clean runs: files still in the outbound folder (push),
           still in the remote folder (pull delete/move; pull keep: on the
           server but never arrived), or whose newest `ferry history` row is
           neither `delivered` nor `held`
held       files whose newest `ferry history` row is `held`
seconds    wall time of the campaign

The table goes to stdout, progress to stderr. When anything is non-zero for
a campaign, its offending names are listed (and written to findings.json),
`ferry status` is printed and its work folder is kept (the path is printed);
a clean campaign's folder is deleted unless --keep. Notes under the table
say what else was seen (clean runs that never exited 0, kills that came after
ferry had finished, exit code 3 after a kill, a refused `consumes` key).

Exit status: 0 lost, doubled, partial, temp_left, stuck and held are 0 for
every campaign that ran (skipped ones do not count); 1 something was found;
2 the harness itself failed (bad usage, no ferry binary, a server that would
not start, a campaign that crashed): the message says what, and the row
shows `error`.

Work folder: /tmp/ferry-campaign-XXXX/<campaign>/ with srv/ (the server;
srv/root is the FTP root, srv/*.log its logs), cfg/ (ferry.yaml, jobs/,
state/), out/ or in/ (and taken/), logs/ (one file per ferry run:
NNN-c<cycle>-killed.log, ...-disrupted.log, clean-N.log, final.log),
manifest.json and findings.json.

Robustness: every server is stopped through scripts/ftp-server.sh and then by
pid (its master and every session process, checked by start time) in a
finally block, also on SIGINT/SIGTERM; every ferry child runs in its own
process group and is killed; every wait has a timeout; control ports are
drawn outside the kernel's ephemeral range with PORT..PORT+20 free.

Run time (2-core machine, debug build, compilations running beside it):
`--quick --cycles 3 --files 40 --campaign all` took 94-114 s (about 10 s per
campaign); the same with an older build that left files failing took 434 s
(retries, 11 clean runs each, the agent's full 120 s). `--cycles 10` (200
files and two big ones per batch) took about 100 s per push campaign, so a
default run of the four push campaigns (50 cycles) needs roughly 30-40 min.
"""

import argparse
import collections
import hashlib
import json
import os
import pwd
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FTP_SCRIPT = REPO / "scripts" / "ftp-server.sh"
CONSUME_SCRIPT = REPO / "scripts" / "consume-inbox.py"
FTP_USER = os.environ.get("FERRY_TEST_USER", "ferrytest")
KIB = 1024
MIB = 1024 * 1024
COLUMNS = ["lost", "doubled", "partial", "temp_left", "stuck", "held"]

PUSH_CAMPAIGNS = ["push-vsftpd", "push-proftpd", "push-pure-ftpd", "push-consume"]
PULL_CAMPAIGNS = ["pull-vsftpd-delete", "pull-vsftpd-keep", "pull-proftpd-delete", "pull-proftpd-move"]
ALL_CAMPAIGNS = PUSH_CAMPAIGNS + PULL_CAMPAIGNS + ["agent-watch"]


class HarnessError(Exception):
    """The campaign itself could not run (not a finding about ferry)."""


class Skipped(Exception):
    """The campaign cannot run on this machine (a server kind is missing)."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

LIVE_PROCS = {}  # pid -> Popen of every ferry (or helper) child still running
LIVE_SERVERS = []  # FtpServer objects that may still run


def proc_stat(pid):
    """(state, ppid, starttime) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def alive(pid, start=None):
    st = proc_stat(pid)
    if st is None or st[0] == "Z":
        return False
    return start is None or st[2] == start


def descendants(root):
    """[(pid, starttime)] of every descendant of root, from one /proc snapshot."""
    kids = collections.defaultdict(list)
    starts = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st is None:
            continue
        kids[st[1]].append(int(d))
        starts[int(d)] = st[2]
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        out.append((p, starts[p]))
        todo.extend(kids.get(p, []))
    return out


def kill_pid(pid, start, sig=signal.SIGKILL):
    """Signal pid only if it is still the same process (same start time)."""
    if alive(pid, start):
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            pass
    return False


def spawn(cmd, log_path, env=None):
    logf = open(log_path, "ab")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
    finally:
        logf.close()
    LIVE_PROCS[p.pid] = p
    return p


def kill_proc(p, sig=signal.SIGKILL, wait=30):
    """Signal a child (its whole process group) and reap it. Returns its exit code or None."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
    try:
        rc = p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rc = p.wait(timeout=30)
    LIVE_PROCS.pop(p.pid, None)
    return rc


def wait_proc(p, timeout):
    """Wait for a child up to timeout; None when it is still running."""
    try:
        rc = p.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return None
    LIVE_PROCS.pop(p.pid, None)
    return rc


def cleanup_everything():
    for p in list(LIVE_PROCS.values()):
        try:
            kill_proc(p, signal.SIGKILL, wait=10)
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log(f"could not kill pid {p.pid}: {e}")
    for s in list(LIVE_SERVERS):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            log(f"could not stop server {s.kind} (pid {s.pid}): {e}")


# ---------------------------------------------------------------- ports

GIVEN_PORTS = []


def ephemeral_range():
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[:2]
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: TIME_WAIT counts as busy
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_block():
    """P such that P..P+20 are free, outside the ephemeral range, not given before."""
    lo, hi = ephemeral_range()
    if lo > 12000:
        a, b = 10000, lo - 22
    else:
        a, b = max(hi + 1, 10000), 65000 - 21
    pick = random.SystemRandom()
    for _ in range(3000):
        p = pick.randrange(a, b)
        if any(abs(p - g) <= 21 for g in GIVEN_PORTS):
            continue
        if all(port_free(q) for q in range(p, p + 21)):
            GIVEN_PORTS.append(p)
            return p
    raise HarnessError(f"no free block of 21 ports on 127.0.0.1 in {a}..{b}")


# ---------------------------------------------------------------- servers

def server_kinds():
    """Kinds scripts/ftp-server.sh accepts, read from its usage text and its error message."""
    text = FTP_SCRIPT.read_text()
    kinds = set()
    in_usage = False
    for line in text.splitlines():
        if re.match(r"#\s*KIND:", line) or "unknown KIND" in line:
            seg = line.split("KIND", 1)[1]
            kinds.update(re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", seg))
            in_usage = line.startswith("#") and line.rstrip().endswith("|")
        elif in_usage and re.match(r"#\s+[a-z0-9-]+(\s*\|\s*[a-z0-9-]+)*\s*\|?\s*$", line):
            kinds.update(re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", line[1:]))
            in_usage = line.rstrip().endswith("|")
        else:
            in_usage = False
    kinds.discard("unknown")
    kinds.discard("kind")
    return kinds


class FtpServer:
    def __init__(self, kind, sdir, port=None):
        self.kind, self.dir, self.port = kind, Path(sdir), port
        self.pid = self.start_time = None
        self.env = {}
        self.write_log = None  # ProFTPD ExtendedLog path; False when the server refused it

    def deliveries(self, remote_dir):
        """How often the server saw each final name in remote_dir written (uploaded under it or
        renamed onto it), from its own log; None when this server logs no such thing."""
        got = collections.Counter()
        remote_dir = "/" + remote_dir.strip("/")
        if self.kind.startswith("vsftpd"):
            path = self.dir / "vsftpd.log"
            if not path.exists():
                return None
            for line in path.read_text(errors="replace").splitlines():
                m = re.search(r'OK RENAME: Client "[^"]*", "(\S+) (\S+)"', line)
                target = m.group(2) if m else None
                if not m:
                    m = re.search(r'OK UPLOAD: Client "[^"]*", "([^"]+)"', line)
                    target = m.group(1) if m else None
                if target and os.path.dirname(target) == remote_dir:
                    got[os.path.basename(target)] += 1
            return got
        if self.write_log:
            if not Path(self.write_log).exists():
                return got
            folder = str(self.root) + remote_dir
            for line in Path(self.write_log).read_text(errors="replace").splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[0] in ("STOR", "RNTO") and parts[1] in ("226", "250") \
                        and os.path.dirname(parts[2]) == folder:
                    got[os.path.basename(parts[2])] += 1
            return got
        return None

    def start_env(self):
        """ProFTPD: an ExtendedLog of STOR/RNTO (to see a file delivered twice), when the script
        takes FERRY_PROFTPD_EXTRA; vsftpd logs its renames and uploads already."""
        env = dict(os.environ)
        if self.kind.startswith("proftpd") and self.write_log is not False and \
                "FERRY_PROFTPD_EXTRA" in FTP_SCRIPT.read_text():
            self.write_log = self.dir / "proftpd-writes.log"
            extra = f'LogFormat ferrywrites "%m|%s|%f"\nExtendedLog {self.write_log} WRITE ferrywrites'
            old = env.get("FERRY_PROFTPD_EXTRA")
            env["FERRY_PROFTPD_EXTRA"] = f"{old}\n{extra}" if old else extra
        return env

    def start(self, attempts=5):
        last = ""
        for i in range(attempts):
            if self.port is None:
                self.port = free_port_block()
            try:
                r = subprocess.run(["bash", str(FTP_SCRIPT), "start", self.kind, str(self.dir), str(self.port)],
                                   capture_output=True, text=True, timeout=90, env=self.start_env())
            except subprocess.TimeoutExpired:
                last = "ftp-server.sh start did not return within 90 s"
                self._reap_from_pidfile()
                continue
            if r.returncode == 0 and r.stdout.split():
                fields = r.stdout.split()
                self.pid = int(fields[-2])
                st = proc_stat(self.pid)
                self.start_time = st[2] if st else None
                if self not in LIVE_SERVERS:
                    LIVE_SERVERS.append(self)
                self.env = {}
                for line in (self.dir / "server.env").read_text().splitlines():
                    if "=" in line:
                        k, v = line.split("=", 1)
                        self.env[k] = v
                return
            last = (r.stderr or r.stdout).strip()
            if self.write_log and "ExtendedLog" in last:
                log(f"{self.kind} refused the ExtendedLog lines; starting it without them: {last[-300:]}")
                self.write_log = False
                continue
            if "unknown KIND" in last:
                raise Skipped(f"scripts/ftp-server.sh does not know kind {self.kind}")
            if "missing" in last and "install-test-deps" in last:
                raise Skipped(last)
            time.sleep(0.5 * (i + 1))
        raise HarnessError(f"could not start {self.kind} in {self.dir} on port {self.port}: {last}")

    def _reap_from_pidfile(self):
        try:
            pid = int((self.dir / "server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for p, s in [(pid, proc_stat(pid)[2] if proc_stat(pid) else None)] + descendants(pid):
            kill_pid(p, s)

    def stop(self):
        if self.pid is None:
            return
        kids = descendants(self.pid)
        try:
            subprocess.run(["bash", str(FTP_SCRIPT), "stop", str(self.dir)], capture_output=True, text=True,
                           timeout=60)
        except subprocess.TimeoutExpired:
            log(f"ftp-server.sh stop {self.dir} hung; killing pid {self.pid}")
        # By pid, whatever the script did: the master and every session it had.
        for p, s in [(self.pid, self.start_time)] + kids + descendants(self.pid):
            kill_pid(p, s)
        deadline = time.monotonic() + 10
        while alive(self.pid, self.start_time) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(self.pid, self.start_time):
            raise HarnessError(f"server pid {self.pid} ({self.kind}) did not exit")
        self.pid = None
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    def restart(self):
        self.stop()
        self.start()

    def kill_sessions(self):
        """SIGKILL every child of the server's master process (the FTP sessions)."""
        n = 0
        if self.pid is not None:
            for p, s in descendants(self.pid):
                n += kill_pid(p, s)
        return n

    @property
    def root(self):
        return self.dir / "root"


def ftp_owner():
    pw = pwd.getpwnam(FTP_USER)
    return pw.pw_uid, pw.pw_gid


def make_remote_dir(server_root, rel):
    """A folder inside the FTP root, owned by the FTP user (it creates and deletes there)."""
    uid, gid = ftp_owner()
    d = server_root / rel
    d.mkdir(parents=True, exist_ok=True)
    p = d
    while p != server_root and p != p.parent:
        os.chown(p, uid, gid)
        p = p.parent
    return d


# ---------------------------------------------------------------- files

ALPHABET = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 7)[:240] + b"*" * 8 + b"~~~~" + b"\n\n" + b"\r" + b":"
assert len(ALPHABET) == 256
TABLE = bytes.maketrans(bytes(range(256)), ALPHABET)


class Generator:
    """Unique X12-looking claim files: an ISA header naming the file, then seeded random text."""

    def __init__(self, rng, tag):
        self.rng, self.tag, self.counter = rng, tag, 0
        self.lock = threading.Lock()

    def write(self, folder, name, size, owner=None):
        """Write folder/name atomically (dot-temp, then rename). Returns (sha256, size)."""
        with self.lock:
            self.counter += 1
            ctrl = self.counter
        header = (f"ISA*00*          *00*          *ZZ*FERRYCAMPAIGN  *ZZ*{self.tag[:15]:<15}*"
                  f"261201*0000*^*00501*{ctrl:09d}*0*T*:~\nREF*F8*{name}~\n").encode()
        h = hashlib.sha256()
        tmp = Path(folder) / f".{name}.writing"
        left = max(0, size - len(header))
        with open(tmp, "wb") as f:
            f.write(header)
            h.update(header)
            while left > 0:
                n = min(left, 4 * MIB)
                with self.lock:
                    chunk = self.rng.randbytes(n).translate(TABLE)
                f.write(chunk)
                h.update(chunk)
                left -= n
        if owner is not None:
            os.chown(tmp, *owner)
        os.rename(tmp, Path(folder) / name)
        return h.hexdigest(), max(size, len(header))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def is_temp(name):
    return name.endswith(".part") or (name.startswith(".") and ".part" in name)


# ---------------------------------------------------------------- ferry

class Ferry:
    def __init__(self, binary, cfg, logs):
        self.binary, self.cfg, self.logs = str(binary), Path(cfg), Path(logs)
        self.env = {k: v for k, v in os.environ.items() if k not in ("FERRY_CONFIG", "RUST_LOG")}
        self.env["NO_COLOR"] = "1"
        self.nlog = 0

    def cmd(self, *args):
        return [self.binary, "--config", str(self.cfg), *args]

    def log_path(self, label):
        self.nlog += 1
        return self.logs / f"{self.nlog:03d}-{label}.log"

    def spawn(self, label, *args):
        return spawn(self.cmd(*args), self.log_path(label), env=self.env)

    def run(self, label, *args, timeout=600):
        """Run to the end (bounded). Returns (rc or 'timeout', seconds)."""
        t0 = time.monotonic()
        p = self.spawn(label, *args)
        rc = wait_proc(p, timeout)
        if rc is None:
            kill_proc(p)
            return "timeout", time.monotonic() - t0
        return rc, time.monotonic() - t0

    def capture(self, *args, timeout=120):
        try:
            r = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=self.env,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "timeout", "", f"ferry {' '.join(args)} did not finish within {timeout}s"
        return r.returncode, r.stdout, r.stderr

    def history(self, job):
        rc, out, err = self.capture("history", "--job", job, "--limit", "0", "--json")
        if rc != 0:
            raise HarnessError(f"ferry history --json failed (rc {rc}): {err.strip()[-500:]}")
        try:
            rows = json.loads(out)
        except ValueError as e:
            raise HarnessError(f"ferry history --json printed no JSON array ({e}): {out[:200]!r}")
        return [r for r in rows if r.get("job") == job]

    def status(self):
        rc, out, err = self.capture("status")
        return out + err + ("" if rc == 0 else f"(ferry status exited {rc})\n")


# ---------------------------------------------------------------- config

def yaml_str(s):
    return json.dumps(str(s))  # a JSON string is a valid YAML double-quoted scalar


def write_config(cfg, server, jobs, consumes=False):
    env = server.env
    (cfg / "jobs").mkdir(parents=True, exist_ok=True)
    tls = "implicit" if "implicit" in server.kind else "explicit"
    text = f"""# written by bench/kill-campaign.py ({server.kind})
state_dir: state
log: {{ format: text, level: info }}
defaults:
  retry: {{ attempts: 3, initial_delay: 100ms, max_delay: 1s }}
servers:
  partner:
    host: {env.get('HOST', '127.0.0.1')}
    port: {env.get('PORT', server.port)}
    tls: {tls}
    user: {yaml_str(env.get('USER', FTP_USER))}
    password: {yaml_str(env.get('PASSWORD', 'ferrytest-pw'))}
    ca_file: {yaml_str(env.get('CA', server.dir / 'certs' / 'ca.pem'))}
    timeout: 10s
    max_connections: 2
"""
    if consumes:
        text += "    consumes: true\n"
    (cfg / "ferry.yaml").write_text(text)
    for name, body in jobs.items():
        (cfg / "jobs" / f"{name}.yaml").write_text(body)


def push_job(local, remote, after="archive", extra=""):
    return f"""direction: push
server: partner
local_dir: {yaml_str(local)}
remote_dir: {remote}
upload: temp_rename
after_push: {after}
verify: auto
stable_for: 0s
retry: {{ attempts: 3, initial_delay: 100ms, max_delay: 1s }}
{extra}"""


def pull_job(local, remote, after):
    return f"""direction: pull
server: partner
local_dir: {yaml_str(local)}
remote_dir: {remote}
after_pull: {yaml_str(after) if ':' in after else after}
verify: auto
stable_for: 0s
retry: {{ attempts: 3, initial_delay: 100ms, max_delay: 1s }}
"""


# ---------------------------------------------------------------- campaign

class Campaign:
    def __init__(self, name, args, base, binary, seed):
        self.name, self.args = name, args
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.cfg = self.dir / "cfg"
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.rng = random.Random(f"{seed}:{name}:timing")
        self.gen = Generator(random.Random(f"{seed}:{name}:content"), name)
        self.ferry = Ferry(binary, self.cfg / "ferry.yaml", self.logs)
        self.manifest = {}  # name -> {"sha256", "size", "cycle"}
        self.mlock = threading.Lock()
        self.notes = []
        self.server = None
        self.t_small = self.t_big = 0.0
        self.kills = self.kills_late = self.disruptions = 0
        self.lock_refusals = 0
        self.clean_rcs = []

    # -- batches

    def big_count(self, cycle):
        if self.args.quick:
            return 1 if cycle == 1 else 0
        return 2

    def batch(self, folder, cycle, owner=None, names_prefix="c"):
        """Drop one cycle's batch into folder, record it in the manifest. Returns bytes written."""
        total = 0
        n_small = self.args.files
        sizes = [self.gen.rng.randint(1 * KIB, 30 * KIB) for _ in range(n_small)]
        sizes += [self.gen.rng.randint(30 * MIB, 80 * MIB) for _ in range(self.big_count(cycle))]
        for i, size in enumerate(sizes, 1):
            name = f"{names_prefix}{cycle}-{i}.837"
            sha, size = self.gen.write(folder, name, size, owner)
            with self.mlock:
                self.manifest[name] = {"sha256": sha, "size": size, "cycle": cycle}
            total += size
        return total

    def window(self, cycle):
        """How long a full run of this cycle's batch takes (measured in calibrate)."""
        return self.t_small + (self.t_big if self.big_count(cycle) else 0.0)

    def calibrate(self, drop_folder, owner=None):
        """Time `ferry once calib` on a small-file batch and on the big files alone.

        The calibration job has its own folders; its files are not in the manifest."""
        gen = Generator(random.Random(f"{self.name}:calib"), "calib")
        for i in range(self.args.files):
            gen.write(drop_folder, f"k-{i}.837", gen.rng.randint(1 * KIB, 30 * KIB), owner)
        rc, self.t_small = self.ferry.run("calibrate-small", "once", "calib", timeout=600)
        if rc != 0:
            raise HarnessError(f"calibration run (small files) exited {rc}: see {self.logs}")
        nbig = max(self.big_count(c) for c in range(1, self.args.cycles + 1))
        if nbig:
            for i in range(nbig):
                gen.write(drop_folder, f"kb-{i}.837", gen.rng.randint(30 * MIB, 80 * MIB), owner)
            rc, self.t_big = self.ferry.run("calibrate-big", "once", "calib", timeout=900)
            if rc != 0:
                raise HarnessError(f"calibration run (big files) exited {rc}: see {self.logs}")
        log(f"{self.name}: a full run takes {self.t_small:.2f}s for {self.args.files} small files"
            + (f", {self.t_big:.2f}s for {nbig} big one(s)" if nbig else ""))

    def run_timeout(self):
        return max(300.0, 30 * (self.t_small + self.t_big))

    def check_config(self, consumes_wanted, write):
        """`ferry check`; drops `consumes: true` (with a note) when ferry refuses it."""
        write(consumes_wanted)
        rc, out, err = self.ferry.capture("check")
        if rc != 0 and consumes_wanted and "consumes" in (out + err):
            msg = (out + err).strip().splitlines()
            why = next((m.strip() for m in msg if "consumes" in m), msg[-1] if msg else "")
            self.notes.append(f"ferry check refuses `consumes: true` ({why}); ran without it")
            log(f"{self.name}: ferry check refuses consumes: true: {why}")
            write(False)
            rc, out, err = self.ferry.capture("check")
        if rc != 0:
            raise HarnessError(f"ferry check exited {rc}: {(out + err).strip()[-800:]}")

    # -- one cycle of `ferry once JOB`

    def kill_cycle(self, cycle, job):
        w = self.window(cycle)
        at = self.rng.uniform(0.0, w)
        t0 = time.monotonic()
        p = self.ferry.spawn(f"c{cycle}-killed", "once", job)
        rc = wait_proc(p, at)
        if rc is None:
            kill_proc(p, signal.SIGKILL)
            self.kills += 1
            log(f"{self.name} cycle {cycle}/{self.args.cycles}: SIGKILL at {at:.2f}s of {w:.2f}s")
        else:
            self.kills_late += 1
            self.note_rc(rc)
            log(f"{self.name} cycle {cycle}/{self.args.cycles}: ferry exited {rc} after "
                f"{time.monotonic() - t0:.2f}s, before the kill at {at:.2f}s")

    def disruption_cycle(self, cycle, job, kill_sessions=True):
        """Server sessions killed, then the server restarted, while ferry runs to its end."""
        w = max(self.window(cycle), 0.5)
        kinds_with_sessions = ("vsftpd", "proftpd")
        ks = kill_sessions and self.server.kind.startswith(kinds_with_sessions)
        t0 = time.monotonic()
        p = self.ferry.spawn(f"c{cycle}-disrupted", "once", job)
        events = []
        # The moments are drawn over the part of the run after ferry's first session is up
        # (a session process started after ferry; older ones may be a killed run's, exiting).
        st = proc_stat(p.pid)
        fstart = st[2] if st else 0
        while p.poll() is None and time.monotonic() - t0 < 2 * w and \
                not any(start >= fstart for _, start in descendants(self.server.pid)):
            time.sleep(0.01)
        ts = time.monotonic() - t0
        r = max(w - ts, 0.3)
        t1 = ts + self.rng.uniform(0.0, 0.4) * r if ks else None
        t2 = ts + (self.rng.uniform(0.5, 0.95) if ks else self.rng.uniform(0.1, 0.9)) * r
        if t1 is not None:
            wait_proc(p, t1 - (time.monotonic() - t0))
            n = self.server.kill_sessions()
            events.append(f"killed {n} session process(es) at {time.monotonic() - t0:.2f}s")
        wait_proc(p, t2 - (time.monotonic() - t0))
        tr = time.monotonic() - t0
        self.server.restart()
        events.append(f"restarted the server at {tr:.2f}s ({time.monotonic() - t0 - tr:.2f}s down)")
        if p.poll() is not None:
            events.append("(ferry had already finished)")
        rc = wait_proc(p, self.run_timeout())
        if rc is None:
            kill_proc(p)
            self.notes.append(f"cycle {cycle}: ferry once did not finish within {self.run_timeout():.0f}s "
                              "after the server disruption (killed)")
            rc = "timeout"
        else:
            self.note_rc(rc)
        self.disruptions += 1
        log(f"{self.name} cycle {cycle}/{self.args.cycles}: {'; '.join(events)}; ferry exited {rc}")

    def is_disruption(self, cycle):
        n = self.args.cycles
        return cycle % 5 == 0 or (n < 5 and n >= 2 and cycle == n)

    def note_rc(self, rc):
        if rc == 3:
            self.lock_refusals += 1

    def clean_runs(self, job, snapshot=None):
        """`ferry once JOB` until it exits 0 (at most 10), then a final one. With --quick, stop
        after 3 runs in a row that changed nothing (same exit code, same files) and say so."""
        same, last = 0, None
        for i in range(10):
            rc, secs = self.ferry.run(f"clean-{i + 1}", "once", job, timeout=self.run_timeout())
            self.clean_rcs.append(rc)
            self.note_rc(rc)
            if rc == 0:
                break
            if self.args.quick and snapshot is not None:
                now = (rc, snapshot())
                same = same + 1 if now == last else 1
                last = now
                if same >= 3:
                    self.notes.append(f"--quick: stopped the clean runs after {i + 1}: "
                                      "3 in a row changed nothing")
                    break
        rc, secs = self.ferry.run("final", "once", job, timeout=self.run_timeout())
        self.clean_rcs.append(rc)
        self.note_rc(rc)
        if 0 not in self.clean_rcs[:-1]:
            self.notes.append(f"clean runs never exited 0 (exit codes {self.clean_rcs[:-1]})")
        if rc != 0:
            self.notes.append(f"final clean run exited {rc}")
        log(f"{self.name}: clean runs exited {self.clean_rcs}")

    def finish_notes(self):
        if self.kills_late:
            self.notes.append(f"{self.kills_late} of {self.kills + self.kills_late} kill cycle(s): "
                              "ferry finished before the kill moment")
        if self.lock_refusals:
            self.notes.append(f"{self.lock_refusals} run(s) exited 3 (state folder in use) after a SIGKILL")

    def save_manifest(self):
        (self.dir / "manifest.json").write_text(json.dumps(self.manifest, indent=1, sort_keys=True))


# ---------------------------------------------------------------- checks

def listing(folder):
    """Names and sizes in a folder (for 'did anything change')."""
    try:
        return tuple(sorted((e.name, e.stat().st_size) for e in os.scandir(folder) if e.is_file()))
    except OSError:
        return ()


def latest_rows(history):
    """Newest history row per file name, and the number of `delivered` rows per name."""
    latest, delivered = {}, collections.Counter()
    for r in history:
        f = r.get("file")
        key = (r.get("id") or 0, r.get("started_at") or "")
        if f not in latest or key > latest[f][0]:
            latest[f] = (key, r)
        if r.get("status") == "delivered":
            delivered[f] += 1
    return {f: r for f, (_, r) in latest.items()}, delivered


def scan_finals(folders):
    """(final files [(path, sha)], temp files [path], other dot files [path]) under folders."""
    finals, temps, dots = [], [], []
    for d in folders:
        if not d.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            for fn in filenames:
                p = Path(dirpath) / fn
                if is_temp(fn):
                    temps.append(p)
                elif fn.startswith("."):
                    dots.append(p)
                else:
                    finals.append((p, sha256_file(p)))
    return finals, temps, dots


def judge(manifest, finals, temps, waiting_names, history, never_pulled=None, server_writes=None):
    """Count the columns.

    finals: delivered copies [(path, sha)]; waiting_names: manifest names still
    waiting at the source (outbound folder / remote folder); never_pulled:
    for pull-keep, names that are on the server but must have arrived.
    """
    by_sha = collections.defaultdict(list)
    for name, m in manifest.items():
        by_sha[m["sha256"]].append(name)
    copies = collections.Counter()
    found = {c: [] for c in COLUMNS}
    partial_names = set()
    for p, sha in finals:
        names = by_sha.get(sha)
        if names:
            copies[names[0]] += 1
        else:
            found["partial"].append(str(p))
            partial_names.add(p.name)
    found["temp_left"] = [str(p) for p in temps]
    latest, delivered = latest_rows(history)
    no_record = []
    for name in sorted(manifest):
        c = copies[name]
        d = delivered[name]
        w = server_writes[name] if server_writes is not None else 0
        extra = max(c - 1, d - 1, w - 1, 0)
        if extra:
            found["doubled"].extend([f"{name} (copies {c}, delivered rows {d}, "
                                     f"written under its name on the server {w}x)"] * extra)
        waiting = name in waiting_names
        if c == 0 and not waiting and name not in partial_names:
            found["lost"].append(name)  # (a file only there half is counted as partial)
        row = latest.get(name)
        st = row.get("status") if row else None
        if st == "held":
            found["held"].append(name)
        elif waiting and (never_pulled is None):
            found["stuck"].append(f"{name} (still waiting; newest history status {st})")
        elif never_pulled is not None and name in never_pulled and c == 0:
            found["stuck"].append(f"{name} (on the server, never pulled; newest history status {st})")
        elif st is not None and st != "delivered":
            found["stuck"].append(f"{name} (newest history status {st}: {row.get('error')})")
        if row is None and c > 0:
            no_record.append(name)
    return found, no_record


def report_findings(camp, found, no_record, extra_notes=()):
    counts = {c: len(v) for c, v in found.items()}
    camp.notes.extend(extra_notes)
    if no_record:
        camp.notes.append(f"{len(no_record)} delivered file(s) have no `ferry history` row "
                          f"(e.g. {no_record[0]})")
    (camp.dir / "findings.json").write_text(json.dumps({"counts": counts, "found": found,
                                                        "no_history_row": no_record,
                                                        "notes": camp.notes}, indent=1))
    return counts


# ---------------------------------------------------------------- mover

class Mover(threading.Thread):
    """A consuming inbox: every final file leaves the inbox as soon as it appears."""

    def __init__(self, inbox, taken, interval=0.01):
        super().__init__(daemon=True)
        self.inbox, self.taken, self.interval = Path(inbox), Path(taken), interval
        self.stop_evt = threading.Event()
        self.moved = 0
        self.error = None

    def target(self, name):
        dest = self.taken / name
        n = 0
        stem, dot, ext = name.rpartition(".")
        while dest.exists():
            n += 1
            dest = self.taken / (f"{stem}.{n}.{ext}" if dot else f"{name}.{n}")
        return dest

    def sweep(self):
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(".") or e.name.endswith(".part") or not e.is_file(follow_symlinks=False):
                continue
            try:
                os.rename(e.path, self.target(e.name))
                self.moved += 1
            except FileNotFoundError:
                pass

    def run(self):
        try:
            while not self.stop_evt.is_set():
                self.sweep()
                time.sleep(self.interval)
        except Exception as e:  # noqa: BLE001 - reported by the campaign
            self.error = e

    def stop(self):
        self.stop_evt.set()
        self.join(timeout=10)


class ExternalMover:
    """scripts/consume-inbox.py INBOX TAKEN, when that script exists."""

    def __init__(self, inbox, taken, log_path):
        self.p = spawn([sys.executable, str(CONSUME_SCRIPT), str(inbox), str(taken)], log_path)
        self.error = None
        self.moved = None

    def started(self):
        return wait_proc(self.p, 1.0) is None

    def stop(self):
        rc = kill_proc(self.p, signal.SIGTERM, wait=10)
        if rc not in (0, -signal.SIGTERM, None):
            self.error = f"scripts/consume-inbox.py exited {rc}"


# ---------------------------------------------------------------- push

def kind_for(campaign):
    kinds = server_kinds()
    if campaign in ("push-vsftpd", "push-consume", "agent-watch") or campaign.startswith("pull-vsftpd"):
        return "vsftpd-explicit"
    if campaign == "push-proftpd":
        return "proftpd-stock" if "proftpd-stock" in kinds else "proftpd"
    if campaign.startswith("pull-proftpd"):
        return "proftpd"
    if campaign == "push-pure-ftpd":
        pure = sorted(k for k in kinds if k.startswith("pure-ftpd") and "implicit" not in k)
        if not pure:
            raise Skipped("scripts/ftp-server.sh knows no pure-ftpd kind yet")
        return "pure-ftpd" if "pure-ftpd" in pure else pure[0]
    raise HarnessError(f"no server kind for {campaign}")


def campaign_push(camp, consume=False):
    a = camp.args
    kind = kind_for(camp.name)
    out = camp.dir / "out"
    calib_out = camp.dir / "calib-out"
    out.mkdir()
    calib_out.mkdir()
    camp.server = FtpServer(kind, camp.dir / "srv")
    inbox = make_remote_dir(camp.server.root, "inbound")
    make_remote_dir(camp.server.root, "calib")
    camp.server.start()
    log(f"{camp.name}: {kind} on 127.0.0.1:{camp.server.port} (pid {camp.server.pid}), work folder {camp.dir}")
    jobs = {"push": push_job(out, "/inbound"), "calib": push_job(calib_out, "/calib", after="delete")}
    camp.check_config(consume and a.consumes_key,
                      lambda c: write_config(camp.cfg, camp.server, jobs, consumes=c))
    camp.calibrate(calib_out)
    taken = camp.dir / "taken"
    mover = None
    if consume:
        taken.mkdir()
        if CONSUME_SCRIPT.exists():
            mover = ExternalMover(inbox, taken, camp.logs / "consume-inbox.log")
            if not mover.started():
                camp.notes.append("scripts/consume-inbox.py INBOX TAKEN exited at once; used the built-in mover")
                mover = None
        if mover is None:
            mover = Mover(inbox, taken)
            mover.start()
    try:
        for cycle in range(1, a.cycles + 1):
            camp.batch(out, cycle)
            camp.save_manifest()
            if camp.is_disruption(cycle):
                camp.disruption_cycle(cycle, "push")
            else:
                camp.kill_cycle(cycle, "push")
        camp.clean_runs("push", lambda: (listing(out), listing(inbox), listing(taken)))
        if consume:
            time.sleep(0.5)  # the mover's last sweep
    finally:
        if mover is not None:
            mover.stop()
            if mover.error:
                camp.notes.append(f"the mover failed: {mover.error}")
    camp.finish_notes()
    history = camp.ferry.history("push")
    finals, temps, dots = scan_finals([inbox] + ([taken] if consume else []))
    waiting = {p.name for p in out.iterdir() if p.is_file() and p.name in camp.manifest}
    writes = camp.server.deliveries("/inbound")
    found, no_record = judge(camp.manifest, finals, temps, waiting, history, server_writes=writes)
    extra = [f"{len(dots)} other dot-file(s) on the server (e.g. {dots[0].name})"] if dots else []
    if writes is None:
        extra.append(f"{camp.server.kind} keeps no log of renames: doubles seen by copies and history only")
    if consume and isinstance(mover, Mover):
        extra.append(f"the mover took {mover.moved} file(s)")
    return report_findings(camp, found, no_record, extra)


# ---------------------------------------------------------------- pull

def campaign_pull(camp, after):
    a = camp.args
    kind = kind_for(camp.name)
    owner = ftp_owner()
    local = camp.dir / "in"
    calib_in = camp.dir / "calib-in"
    local.mkdir()
    calib_in.mkdir()
    camp.server = FtpServer(kind, camp.dir / "srv")
    remote = make_remote_dir(camp.server.root, "outbound")
    calib_remote = make_remote_dir(camp.server.root, "calib")
    processed = None
    if after.startswith("move:"):
        processed = make_remote_dir(camp.server.root, after[len("move:/"):])
    camp.server.start()
    log(f"{camp.name}: {kind} on 127.0.0.1:{camp.server.port} (pid {camp.server.pid}), work folder {camp.dir}")
    jobs = {"pull": pull_job(local, "/outbound", after), "calib": pull_job(calib_in, "/calib", "delete")}
    camp.check_config(False, lambda c: write_config(camp.cfg, camp.server, jobs))
    camp.calibrate(calib_remote, owner)
    for cycle in range(1, a.cycles + 1):
        camp.batch(remote, cycle, owner=owner)
        camp.save_manifest()
        camp.kill_cycle(cycle, "pull")
    camp.clean_runs("pull", lambda: (listing(remote), listing(local)))
    camp.finish_notes()
    history = camp.ferry.history("pull")
    finals, temps, dots = scan_finals([local])
    on_server = {p.name for p in remote.iterdir() if p.is_file()}
    _, server_temps, _ = scan_finals([remote] + ([processed] if processed else []))
    temps += server_temps
    if after == "keep":
        # Every file stays on the server: it must have arrived, it never "waits".
        found, no_record = judge(camp.manifest, finals, temps, on_server & set(camp.manifest), history,
                                 never_pulled=on_server)
        # judge() counts keep-mode files on the server as waiting, hence never lost: redo lost here.
        copies = {n for n in camp.manifest if any(sha == camp.manifest[n]["sha256"] for _, sha in finals)}
        halves = {Path(x).name for x in found["partial"]}
        found["lost"] = [n for n in sorted(camp.manifest)
                         if n not in copies and n not in on_server and n not in halves]
    else:
        found, no_record = judge(camp.manifest, finals, temps, on_server & set(camp.manifest), history)
    extra = [f"{len(dots)} other dot-file(s) in the local inbound folder (e.g. {dots[0].name})"] if dots else []
    if processed is not None:
        moved = {p.name for p in processed.iterdir() if p.is_file()}
        both = moved & on_server
        if both:
            extra.append(f"{len(both)} file(s) both in /outbound and in the move target")
    return report_findings(camp, found, no_record, extra)


# ---------------------------------------------------------------- agent

class Writer(threading.Thread):
    """Keeps dropping files into the outbound folder (dot-temp, then rename)."""

    def __init__(self, camp, folder):
        super().__init__(daemon=True)
        self.camp, self.folder = camp, folder
        self.q = queue.Queue()
        self.stop_evt = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop_evt.is_set():
                try:
                    name, size, delay, cycle = self.q.get(timeout=0.1)
                except queue.Empty:
                    continue
                sha, size = self.camp.gen.write(self.folder, name, size)
                with self.camp.mlock:
                    self.camp.manifest[name] = {"sha256": sha, "size": size, "cycle": cycle}
                self.q.task_done()
                self.stop_evt.wait(delay)
        except Exception as e:  # noqa: BLE001 - reported by the campaign
            self.error = e

    def drain(self, timeout):
        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.1)
        return not self.q.unfinished_tasks


def campaign_agent(camp):
    a = camp.args
    camp.server = FtpServer(kind_for(camp.name), camp.dir / "srv")
    out = camp.dir / "out"
    calib_out = camp.dir / "calib-out"
    out.mkdir()
    calib_out.mkdir()
    inbox = make_remote_dir(camp.server.root, "inbound")
    make_remote_dir(camp.server.root, "calib")
    camp.server.start()
    log(f"{camp.name}: {camp.server.kind} on 127.0.0.1:{camp.server.port} (pid {camp.server.pid}), "
        f"work folder {camp.dir}")
    job = push_job(out, "/inbound").replace("stable_for: 0s", "stable_for: 1s") + \
        "watch: true\nrescan_interval: 10s\n"
    jobs = {"watch": job, "calib": push_job(calib_out, "/calib", after="delete")}
    camp.check_config(False, lambda c: write_config(camp.cfg, camp.server, jobs))
    camp.calibrate(calib_out)
    writer = Writer(camp, out)
    writer.start()
    agent = None
    try:
        for cycle in range(1, a.cycles + 1):
            w = 1.0 + camp.window(cycle) + 1.5  # stable_for + a full run + start-up and rescan
            at = camp.rng.uniform(0.3, w)
            # This cycle's files trickle in over the agent's life (big ones first).
            for j in range(camp.big_count(cycle)):
                writer.q.put((f"w{cycle}-big{j + 1}.837", camp.rng.randint(30 * MIB, 80 * MIB), 0.0, cycle))
            n = a.files
            for i in range(1, n + 1):
                writer.q.put((f"w{cycle}-{i}.837", camp.rng.randint(1 * KIB, 30 * KIB), at / n, cycle))
            agent = camp.ferry.spawn(f"c{cycle}-agent", "run")
            rc = wait_proc(agent, at)
            if rc is None:
                kill_proc(agent, signal.SIGKILL)
                camp.kills += 1
                log(f"{camp.name} cycle {cycle}/{a.cycles}: SIGKILL of ferry run at {at:.2f}s "
                    f"({len(camp.manifest)} files written so far)")
            else:
                camp.notes.append(f"cycle {cycle}: ferry run exited {rc} by itself after {at:.2f}s or less")
                camp.note_rc(rc)
            agent = None
        if not writer.drain(600):
            camp.notes.append("the writer did not finish its queue within 600 s")
    finally:
        writer.stop_evt.set()
        writer.join(timeout=30)
        if agent is not None:
            kill_proc(agent)
    if writer.error:
        camp.notes.append(f"the writer failed: {writer.error}")
    camp.save_manifest()
    # Final: the agent runs until the outbound folder is empty or 120 s pass, then SIGTERM.
    agent = camp.ferry.spawn("final-agent", "run")
    t0 = time.monotonic()
    try:
        last, since = None, time.monotonic()
        while time.monotonic() - t0 < 120:
            if agent.poll() is not None:
                camp.notes.append(f"final ferry run exited {agent.returncode} on its own")
                break
            left = [p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")]
            if not left:
                break
            now = (listing(out), listing(inbox))
            if now != last:
                last, since = now, time.monotonic()
            elif a.quick and time.monotonic() - since > 25:
                camp.notes.append(f"--quick: final ferry run stopped after 25 s without change "
                                  f"({len(left)} file(s) still in the outbound folder)")
                break
            time.sleep(0.2)
        else:
            camp.notes.append("the outbound folder was not empty after 120 s of the final ferry run")
        drained = time.monotonic() - t0
        rc = kill_proc(agent, signal.SIGTERM, wait=90) if agent.poll() is None else agent.returncode
        LIVE_PROCS.pop(agent.pid, None)
    finally:
        if agent.poll() is None:
            kill_proc(agent)
    camp.clean_rcs = [rc]
    if rc != 0:
        camp.notes.append(f"ferry run exited {rc} after SIGTERM (expected 0)")
    log(f"{camp.name}: final agent emptied the folder in {drained:.1f}s, exited {rc} on SIGTERM")
    camp.finish_notes()
    history = camp.ferry.history("watch")
    finals, temps, dots = scan_finals([inbox])
    waiting = {p.name for p in out.iterdir() if p.is_file() and p.name in camp.manifest}
    found, no_record = judge(camp.manifest, finals, temps, waiting, history,
                             server_writes=camp.server.deliveries("/inbound"))
    return report_findings(camp, found, no_record)


# ---------------------------------------------------------------- main

def self_check():
    """The checks must see what they claim to count: fabricate one of each failure and count."""
    with tempfile.TemporaryDirectory(prefix="ferry-campaign-selfcheck-") as d:
        d = Path(d)
        out, inbox = d / "out", d / "inbox"
        out.mkdir()
        inbox.mkdir()
        gen = Generator(random.Random(1), "selfcheck")
        manifest = {}
        for n in ["ok", "lost", "doubled", "partial", "stuck", "held", "twice", "renamed2"]:
            sha, size = gen.write(inbox, f"{n}.837", 2000)
            manifest[f"{n}.837"] = {"sha256": sha, "size": size, "cycle": 1}
        os.unlink(inbox / "lost.837")                                         # lost
        shutil.copy(inbox / "doubled.837", inbox / "doubled.1.837")           # doubled (a copy)
        with open(inbox / "partial.837", "r+b") as f:                         # partial (truncated)
            f.truncate(1000)
        (inbox / "x.837.part").write_bytes(b"half")                           # temp_left
        shutil.copy(inbox / "stuck.837", out / "stuck.837")                   # stuck (still waiting)
        shutil.copy(inbox / "held.837", out / "held.837")                     # held
        hist = [{"id": i, "job": "j", "file": f, "status": st} for i, (f, st) in enumerate(
            [("ok.837", "delivered"), ("doubled.837", "delivered"), ("held.837", "held"),
             ("twice.837", "delivered"), ("twice.837", "delivered"), ("renamed2.837", "delivered"),
             ("stuck.837", "failed")])]
        writes = collections.Counter({"renamed2.837": 2})                    # renamed onto twice
        finals, temps, _ = scan_finals([inbox])
        waiting = {p.name for p in out.iterdir()}
        found, _ = judge(manifest, finals, temps, waiting, hist, server_writes=writes)
        got = {c: len(v) for c, v in found.items()}
        want = {"lost": 1, "doubled": 3, "partial": 1, "temp_left": 1, "stuck": 1, "held": 1}
        if got != want:
            print(f"self-check FAILED: counted {got}, expected {want}\n{json.dumps(found, indent=1)}")
            return 1
        print(f"self-check ok: {got}")
        return 0


def resolve_binary(wait):
    env = os.environ.get("FERRY_BIN")
    if env:
        cand = [Path(env)]
    else:
        cand = [REPO / "target" / "release" / "ferry", REPO / "target" / "debug" / "ferry"]
    deadline = time.monotonic() + wait
    while True:
        for c in cand:
            if c.is_file() and os.access(c, os.X_OK):
                return c
        if time.monotonic() >= deadline:
            raise HarnessError(f"no ferry binary at {' or '.join(map(str, cand))} (set FERRY_BIN)")
        time.sleep(5)


def select(names):
    if not names:
        return list(PUSH_CAMPAIGNS)
    out = []
    for n in names:
        if n == "all":
            picked = ALL_CAMPAIGNS
        elif n == "push":
            picked = PUSH_CAMPAIGNS
        elif n == "pull":
            picked = PULL_CAMPAIGNS
        elif n in ALL_CAMPAIGNS:
            picked = [n]
        else:
            raise SystemExit(f"kill-campaign.py: unknown campaign {n!r}; one of: all, push, pull, "
                             + ", ".join(ALL_CAMPAIGNS))
        out.extend(p for p in picked if p not in out)
    return out


def run_campaign(name, args, base, binary, seed):
    camp = Campaign(name, args, base, binary, seed)
    t0 = time.monotonic()
    row = {"campaign": name, "cycles": args.cycles, "files": 0, **{c: None for c in COLUMNS},
           "seconds": 0.0, "notes": camp.notes, "workdir": str(camp.dir), "status": "ok"}
    try:
        if name == "push-consume":
            counts = campaign_push(camp, consume=True)
        elif name.startswith("push-"):
            counts = campaign_push(camp)
        elif name.startswith("pull-"):
            counts = campaign_pull(camp, {"delete": "delete", "keep": "keep",
                                          "move": "move:/outbound/processed"}[name.rsplit("-", 1)[1]])
        else:
            counts = campaign_agent(camp)
        row.update(counts)
    except Skipped as e:
        row["status"] = "skipped"
        camp.notes.append(f"skipped: {e}")
        log(f"{name}: skipped: {e}")
    except HarnessError as e:
        row["status"] = "error"
        camp.notes.append(f"harness error: {e}")
        log(f"{name}: HARNESS ERROR: {e}")
    except Exception as e:  # noqa: BLE001 - one broken campaign must not hide the others
        row["status"] = "error"
        camp.notes.append(f"harness error: {type(e).__name__}: {e}")
        log(f"{name}: HARNESS ERROR: {type(e).__name__}: {e}")
        import traceback
        traceback.print_exc()
    finally:
        for p in list(LIVE_PROCS.values()):
            kill_proc(p)
        if camp.server is not None:
            try:
                camp.server.stop()
            except HarnessError as e:
                camp.notes.append(str(e))
    row["files"] = len(camp.manifest)
    row["seconds"] = round(time.monotonic() - t0, 1)
    row["calibration"] = {"small_s": round(camp.t_small, 3), "big_s": round(camp.t_big, 3)}
    row["kills"] = camp.kills
    row["disruptions"] = camp.disruptions
    row["clean_run_rcs"] = camp.clean_rcs
    bad = row["status"] == "error" or any(row[c] for c in COLUMNS)
    row["kept"] = bool(bad or args.keep) and row["status"] != "skipped"
    if bad and row["status"] == "ok":
        print(f"\n=== {name}: something was found; work folder kept: {camp.dir}")
        for c in COLUMNS:
            items = []
            try:
                items = json.loads((camp.dir / "findings.json").read_text())["found"][c]
            except (OSError, ValueError, KeyError):
                pass
            if items:
                more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
                print(f"  {c} ({len(items)}): " + "; ".join(items[:8]) + more)
        for n in camp.notes:
            print(f"  note: {n}")
        print(f"--- ferry status ({name})")
        print(camp.ferry.status().rstrip())
        sys.stdout.flush()
    elif bad:
        print(f"\n=== {name}: harness error; work folder kept: {camp.dir}")
        for n in camp.notes:
            print(f"  note: {n}")
    if not row["kept"]:
        shutil.rmtree(camp.dir, ignore_errors=True)
    return row


def fmt_table(rows):
    head = ["campaign", "cycles", "files"] + COLUMNS + ["seconds"]
    widths = [max(20, max(len(r["campaign"]) for r in rows))] + [max(7, len(h)) for h in head[1:]]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))]
    for r in rows:
        cells = [r["campaign"].ljust(widths[0])]
        for i, h in enumerate(head[1:], 1):
            v = r.get(h)
            if r["status"] != "ok" and h in COLUMNS:
                v = r["status"] if h == "lost" else "-"
            if h == "seconds":
                v = f"{r['seconds']:.1f}"
            cells.append(str(v).rjust(widths[i]))
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaign", action="append", default=[], metavar="NAME",
                    help="repeatable: " + ", ".join(ALL_CAMPAIGNS) + ", all, push, pull (default: push)")
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--consumes-key", dest="consumes_key", action="store_true", default=True)
    ap.add_argument("--no-consumes-key", dest="consumes_key", action="store_false")
    ap.add_argument("--wait-bin", type=float, default=0.0, metavar="SECS")
    ap.add_argument("--self-check", action="store_true",
                    help="only check that the counting sees fabricated failures (no servers, no root)")
    args = ap.parse_args()
    if args.self_check:
        return self_check()
    if args.cycles < 1 or args.files < 1:
        ap.error("--cycles and --files must be at least 1")
    campaigns = select(args.campaign)
    if os.geteuid() != 0:
        print("kill-campaign.py: must run as root (the FTP servers need it)", file=sys.stderr)
        return 2
    if not FTP_SCRIPT.exists():
        print(f"kill-campaign.py: {FTP_SCRIPT} is missing", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    base = Path(tempfile.mkdtemp(prefix="ferry-campaign-", dir="/tmp"))
    rows = []
    t0 = time.monotonic()
    try:
        try:
            src = resolve_binary(args.wait_bin)
        except HarnessError as e:
            print(f"kill-campaign.py: {e}", file=sys.stderr)
            return 2
        binary = base / "ferry"
        shutil.copy2(src, binary)
        st = src.stat()
        log(f"ferry binary {src} ({st.st_size} bytes, built {time.ctime(st.st_mtime)}), copied to {binary}")
        log(f"seed {seed}; campaigns {', '.join(campaigns)}; {args.cycles} cycles x {args.files} files"
            + (" (quick)" if args.quick else ""))
        for name in campaigns:
            rows.append(run_campaign(name, args, base, binary, seed))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping servers and ferry processes")
        cleanup_everything()
        print(f"interrupted; work folder kept: {base}")
        return 2
    finally:
        cleanup_everything()
    elapsed = time.monotonic() - t0
    kept = any(r["kept"] for r in rows)
    print()
    print(f"ferry kill campaign: seed {seed}, {args.cycles} cycles, {args.files} files per batch"
          + (", quick" if args.quick else "") + f", {elapsed:.0f}s, binary {src}")
    print(fmt_table(rows))
    for r in rows:
        for n in r["notes"]:
            print(f"  {r['campaign']}: {n}")
    if kept:
        print(f"work folder kept: {base}")
    else:
        (base / "ferry").unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seed": seed, "cycles": args.cycles, "files_per_batch": args.files, "quick": args.quick,
            "binary": str(src), "seconds": round(elapsed, 1), "workdir": str(base) if kept else None,
            "columns": ["campaign", "cycles", "files"] + COLUMNS + ["seconds"], "campaigns": rows}, indent=1))
    if any(r["status"] == "error" for r in rows):
        return 2
    if any(r["status"] == "ok" and any(r[c] for c in COLUMNS) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
