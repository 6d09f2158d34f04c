#!/usr/bin/env python3
"""A consuming inbox: move every final file out of DIR into DEST as soon as it appears.

Usage: consume-inbox.py [--interval SECONDS] [--log FILE] DIR DEST

Plays a clearinghouse that takes each delivered file away: every regular
file directly in DIR whose name does not end in ".part" and does not start
with "." (upload temporaries: ProFTPD HiddenStores ".in.NAME.", Pure-FTPd
".pureftpd-upload.*") is moved into DEST the moment it is seen. DIR is
polled every --interval seconds (default 0.01). Works with any server
writing into DIR (e.g. DIR/root/<folder> of scripts/ftp-server.sh).

A name that is already in DEST is never overwritten: the copy gets a counter,
NAME, NAME.1, NAME.2, ... so duplicate deliveries stay visible and countable.
Within one filesystem the move is a hard link plus unlink (atomic, and a
file still being written keeps growing at its new place); across filesystems
the file is copied once its size stopped changing for one interval.

DIR and DEST are created if missing (DIR with the owner of its parent, so an
FTP user can still write into it). Prints "ready" on stdout once watching;
each move is logged ("moved NAME -> DEST/NAME.1") to --log, else stderr.
SIGTERM or SIGINT stop it (exit status 0).
"""
import argparse
import errno
import os
import shutil
import signal
import sys
import time


def ensure_dir(path):
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    ensure_dir(parent)
    os.mkdir(path)
    st = os.stat(parent)
    try:
        os.chown(path, st.st_uid, st.st_gid)
    except PermissionError:
        pass


def wanted(entry):
    name = entry.name
    if name.startswith(".") or name.endswith(".part"):
        return False
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


class Mover:
    def __init__(self, src, dest, log):
        self.src, self.dest, self.log = src, dest, log
        self.sizes = {}  # cross-device candidates: name -> last size seen
        self.stuck = set()  # copied but not removable (no write permission on DIR)

    def target(self, name, n):
        return os.path.join(self.dest, name if n == 0 else "%s.%d" % (name, n))

    def link_in(self, path, name):
        """Hard-link path into DEST under the first free name; returns that name."""
        n = 0
        while True:
            dst = self.target(name, n)
            try:
                os.link(path, dst)
                return dst
            except FileExistsError:
                n += 1

    def copy_in(self, path, name):
        n = 0
        while os.path.lexists(self.target(name, n)):
            n += 1
        tmp = os.path.join(self.dest, ".consume-inbox.tmp")
        shutil.copy2(path, tmp)
        while True:
            dst = self.target(name, n)
            try:
                os.link(tmp, dst)
                os.unlink(tmp)
                return dst
            except FileExistsError:
                n += 1

    def move(self, entry):
        path, name = entry.path, entry.name
        try:
            dst = self.link_in(path, name)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM):
                if e.errno != errno.ENOENT:
                    self.log("cannot move %s: %s" % (name, e))
                return
            # Another filesystem: copy once the size is stable for one poll.
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return
            if self.sizes.get(name) != size:
                self.sizes[name] = size
                return
            dst = self.copy_in(path, name)
        self.sizes.pop(name, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            # Copied but cannot remove: say so once, never copy it again.
            self.stuck.add(name)
            self.log("copied %s -> %s but cannot remove it: %s" % (name, dst, e))
            return
        self.log("moved %s -> %s" % (name, dst))

    def scan(self):
        try:
            entries = list(os.scandir(self.src))
        except FileNotFoundError:
            return
        for entry in entries:
            if wanted(entry) and entry.name not in self.stuck:
                self.move(entry)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--log")
    p.add_argument("dir")
    p.add_argument("dest")
    args = p.parse_args()

    out = open(args.log, "a", buffering=1) if args.log else sys.stderr

    def log(msg):
        out.write("%s consume-inbox: %s\n" % (time.strftime("%H:%M:%S"), msg))
        out.flush()

    ensure_dir(args.dir)
    os.makedirs(args.dest, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    mover = Mover(os.path.abspath(args.dir), os.path.abspath(args.dest), log)
    log("watching %s, moving into %s" % (mover.src, mover.dest))
    print("ready", flush=True)
    while not stop:
        mover.scan()
        time.sleep(args.interval)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
