#!/usr/bin/python3
"""A scriptable FTPS server with quirks, for ferry's interop tests.

Debian's pyftpdlib (python3-pyftpdlib) with pyOpenSSL (python3-openssl), one
process serving every session. Started by `scripts/ftp-server.sh start
pyftpdlib DIR PORT`; it can be run by hand too:

  quirk-ftp-server.py --port P --root DIR --user U --password PW
                      --cert server.pem --key server.key
                      [--host 127.0.0.1] [--pasv-count 20] [--log FILE]
                      [--run-as USER] [--quirks a,b]

Explicit TLS (AUTH TLS) is required before USER/PASS, and PROT P before any
data connection; TLS 1.2 or 1.3. One login (U/PW), chrooted to --root, all
permissions. Passive ports PORT+1..PORT+pasv-count on --host. With --run-as
(or when started by ftp-server.sh) the key is loaded and the ports bound as
root, then the process runs as that user, so files belong to it. Prints
nothing on success; logs every command and reply to --log.

Stock pyftpdlib behaviour worth knowing (no quirk needed): SIZE in TYPE A
answers "550 SIZE not allowed in ASCII mode."; SIZE of a missing file
"550 /name is not retrievable."; an upload whose data connection is closed
early is still "226 Transfer complete." (it cannot tell); no TLS session
reuse is required on data connections.

Quirks (--quirks, else the FERRY_QUIRKS environment variable; comma-separated):
  iis-size             SIZE of a missing file: "550 The system cannot find the file specified."
  no-feat              FEAT: "211 No features" (one line)
  no-mlst              no MLST/MLSD: not in FEAT, answered "500 Command "MLSD" not understood."
  no-size              SIZE: "502 Command not implemented." (and not in FEAT)
  sha256               HASH (draft-bryan-ftpext-hash): FEAT "HASH SHA-1;SHA-256*;SHA-512;MD5",
                       OPTS HASH [name] -> "200 SHA-256", HASH path ->
                       "213 SHA-256 0-<size-1> <lowercase hex> <path>", XSHA256 path -> "213 <hex>"
  lying-hash           HASH and XSHA256 (implies sha256) answer a wrong digest
  rnto-drop            after a successful RNTO, close the control connection with no reply
                       (the rename happened, the reply is lost)
  stor-421-after-data  after a whole upload (client closed the data connection), reply
                       "421 Service not available, closing control connection." and close,
                       instead of 226 (the file is complete on disk)
  too-many-530         a second concurrent login of the same user: "530 Sorry, the maximum
                       number of clients (1) for this user are already connected." and the
                       connection is closed (ProFTPD MaxClientsPerUser 1 says exactly this)
  pasv-elsewhere       no EPSV; PASV replies name 127.0.0.2 (the data listener stays on 127.0.0.1)
  epsv-425             every third EPSV is answered "425 EPSV: Address already in use" (ProFTPD's
                       reply when the passive port it picked is taken) and nothing is opened
  prot-534             PROT P is refused with "534 PROT P refused by policy."
  odd-list             LIST in DOS format with four-digit years and Unix with ACL markers,
                       plus a symlink and a line that is no listing line (use with no-mlst)
  consume              a file whose upload completes, or which RNTO renames, under a name not
                       ending in ".part" is deleted right after the 226/250 (a consuming,
                       write-once inbox)
SIGUSR1 drops every session at once (sockets shut down, no reply), as a
killed per-session process would; SIGTERM stops the server.
"""
import argparse
import hashlib
import logging
import os
import pwd
import signal
import socket
import stat
import sys
import time

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler, _strerror
from pyftpdlib.servers import FTPServer

KNOWN = {"epsv-425", "iis-size", "no-feat", "no-mlst", "no-size", "sha256", "lying-hash", "rnto-drop",
         "stor-421-after-data", "too-many-530", "consume", "odd-list",
         "pasv-elsewhere", "prot-534"}
QUIRKS = set()
ALGOS = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512", "MD5": "md5"}
log = logging.getLogger("quirk-ftp-server")


def quirk(name):
    return name in QUIRKS


class QuirkDTPHandler(TLS_DTPHandler):
    def close(self):
        # A finished upload's "226" becomes "421" and the control connection closes.
        if (quirk("stor-421-after-data") and not self._closed and self.receive
                and self.transfer_finished and self._resp and self._resp[0].startswith("226")):
            self._resp = ("421 Service not available, closing control connection.", log.info)
            cmd = self.cmd_channel
            super().close()
            cmd.close_when_done()
            return
        super().close()


class QuirkHandler(TLS_FTPHandler):
    tls_control_required = True
    tls_data_required = True
    dtp_handler = QuirkDTPHandler
    proto_cmds = TLS_FTPHandler.proto_cmds.copy()
    # Logged-in sessions per user name (one process: a plain dict is enough).
    sessions = {}

    def __init__(self, conn, server, ioloop=None):
        self._counted = None
        self._hash_algo = "SHA-256"
        self._raw_arg = ""
        super().__init__(conn, server, ioloop)

    def pre_process_command(self, line, cmd, arg):
        # The argument as the client sent it, for the HASH reply's <pathname>.
        self._raw_arg = arg
        super().pre_process_command(line, cmd, arg)

    # --- logins
    def ftp_PASS(self, line):
        if quirk("too-many-530") and not self.authenticated and self.username:
            if self.sessions.get(self.username, 0) >= 1:
                self.respond("530 Sorry, the maximum number of clients (1) for this user "
                             "are already connected.")
                self.close_when_done()
                return
        super().ftp_PASS(line)

    def on_login(self, username):
        self.sessions[username] = self.sessions.get(username, 0) + 1
        self._counted = username

    def _uncount(self):
        if self._counted is not None:
            self.sessions[self._counted] -= 1
            self._counted = None

    def flush_account(self):
        self._uncount()
        super().flush_account()

    def close(self):
        self._uncount()
        super().close()

    # --- FEAT, SIZE, MLST
    def ftp_FEAT(self, line):
        if quirk("no-feat"):
            self.respond("211 No features")
            return
        feats = {"UTF8", "TVFS", "EPRT", "EPSV", "MDTM", "MFMT", "REST STREAM"}
        if quirk("pasv-elsewhere"):
            feats.discard("EPSV")
        feats.update(self._extra_feats)
        if not quirk("no-size"):
            feats.add("SIZE")
        if "MLST" in self.proto_cmds:
            feats.add("MLST " + "".join(
                f + ("*;" if f in self._current_facts else ";") for f in self._available_facts))
        if "HASH" in self.proto_cmds:
            feats.add("HASH " + ";".join(a + ("*" if a == self._hash_algo else "") for a in ALGOS))
        if "XSHA256" in self.proto_cmds:
            feats.add("XSHA256")
        self.push("211-Features supported:\r\n")
        self.push("".join(" %s\r\n" % f for f in sorted(feats)))
        self.respond("211 End FEAT.")

    epsv_count = 0

    def ftp_EPSV(self, line):
        if quirk("pasv-elsewhere"):
            self.respond("502 Command not implemented.")
            return
        if quirk("epsv-425"):
            QuirkHandler.epsv_count += 1
            if QuirkHandler.epsv_count % 3 == 0:
                log.info("epsv-425: refused EPSV %d", QuirkHandler.epsv_count)
                self.respond("425 EPSV: Address already in use")
                return
        super().ftp_EPSV(line)

    def ftp_PROT(self, line):
        if quirk("prot-534"):
            self.respond("534 PROT P refused by policy.")
            return
        super().ftp_PROT(line)

    def ftp_SIZE(self, path):
        if quirk("no-size"):
            self.respond("502 Command not implemented.")
            return
        if quirk("iis-size") and not self.fs.isfile(self.fs.realpath(path)):
            self.respond("550 The system cannot find the file specified.")
            return
        super().ftp_SIZE(path)

    # --- HASH (draft-bryan-ftpext-hash) and XSHA256
    def ftp_OPTS(self, line):
        words = line.split()
        if "HASH" in self.proto_cmds and words and words[0].upper() == "HASH":
            if len(words) == 1:
                self.respond("200 " + self._hash_algo)
            elif len(words) == 2 and words[1].upper() in ALGOS:
                self._hash_algo = words[1].upper()
                self.respond("200 " + self._hash_algo)
            else:
                self.respond("501 Unknown algorithm, current selection not changed")
            return
        super().ftp_OPTS(line)

    def _digest(self, path, algo):
        """(hex digest, size) of a file, or None after a 550 reply."""
        if not self.fs.isfile(self.fs.realpath(path)):
            self.respond("550 %s: No such file or directory." % self.fs.fs2ftp(path))
            return None
        h = hashlib.new(ALGOS[algo])
        try:
            with self.run_as_current_user(self.fs.open, path, "rb") as f:
                for block in iter(lambda: f.read(1 << 16), b""):
                    h.update(block)
                size = f.tell()
        except (OSError, FilesystemError) as err:
            self.respond("550 %s." % _strerror(err))
            return None
        if quirk("lying-hash"):
            h.update(b"lie")
        return h.hexdigest(), size

    def ftp_HASH(self, path):
        got = self._digest(path, self._hash_algo)
        if got:
            hexd, size = got
            self.respond("213 %s 0-%d %s %s" % (self._hash_algo, max(size - 1, 0), hexd,
                                                self._raw_arg))

    def ftp_XSHA256(self, path):
        got = self._digest(path, "SHA-256")
        if got:
            self.respond("213 " + got[0])

    # --- RNTO and the consuming inbox
    def _consume(self, path):
        if quirk("consume") and not os.path.basename(path).endswith(".part"):
            try:
                self.run_as_current_user(os.remove, path)
                self.log("consume: removed %s" % self.fs.fs2ftp(path))
            except OSError as err:
                self.log("consume: could not remove %s: %s" % (path, err))

    def ftp_LIST(self, path):
        # odd-list: what some partners' servers send. Every other file in DOS
        # format with a four-digit year, the others Unix with an ACL marker
        # ("-rw-r--r--+"), then a symlink and a line that is no listing line.
        if not quirk("odd-list"):
            return super().ftp_LIST(path)
        try:
            names = sorted(os.listdir(path))
            lines = []
            for i, n in enumerate(names):
                st = os.lstat(os.path.join(path, n))
                t = time.gmtime(st.st_mtime)
                is_dir = stat.S_ISDIR(st.st_mode)
                if i % 2 == 0:
                    size = "%20s" % ("<DIR>" if is_dir else st.st_size)
                    lines.append("%s  %s %s %s" % (time.strftime("%m-%d-%Y", t),
                                                   time.strftime("%I:%M%p", t), size, n))
                else:
                    perms = "drwxr-xr-x+" if is_dir else "-rw-r--r--+"
                    lines.append("%s 1 ferry ferry %d %s %s" % (perms, st.st_size,
                                                              time.strftime("%b %d %H:%M", t), n))
            lines.append("lrwxrwxrwx 1 ferry ferry 7 Nov 24 01:50 link.999 -> target.999")
            lines.append("this line is not a listing line")
        except OSError as err:
            self.respond("550 %s." % _strerror(err))
            return None
        self.push_dtp_data("".join(l + "\r\n" for l in lines).encode(), cmd="LIST")
        return path

    def ftp_RNTO(self, path):
        if quirk("rnto-drop") and self._rnfr:
            src, self._rnfr = self._rnfr, None
            try:
                self.run_as_current_user(self.fs.rename, src, path)
            except (OSError, FilesystemError) as err:
                self.respond("550 %s." % _strerror(err))
                return None
            self.log("rnto-drop: renamed %s, closing without a reply" % self.fs.fs2ftp(path))
            self._consume(path)
            self.close()
            return None
        done = super().ftp_RNTO(path)
        if done:
            self._consume(done[1])
        return done

    def on_file_received(self, file):
        # Called right after the 226 was queued (DTPHandler.close).
        self._consume(file)


def configure(quirks):
    unknown = quirks - KNOWN
    if unknown:
        sys.exit("quirk-ftp-server.py: unknown quirk(s): %s (known: %s)"
                 % (",".join(sorted(unknown)), ",".join(sorted(KNOWN))))
    QUIRKS.update(quirks)
    if quirk("lying-hash"):
        QUIRKS.add("sha256")
    cmds = QuirkHandler.proto_cmds
    if quirk("no-mlst"):
        cmds.pop("MLST", None)
        cmds.pop("MLSD", None)
    if quirk("sha256"):
        cmds["HASH"] = dict(perm="r", auth=True, arg=True,
                            help="Syntax: HASH <SP> file-name (hash of a file).")
        cmds["XSHA256"] = dict(perm="r", auth=True, arg=True,
                               help="Syntax: XSHA256 <SP> file-name (SHA-256 of a file).")


def drop_all_sessions(server):
    """Shut down every control and data socket without a reply (SIGUSR1)."""
    objs = [o for o in list(server.ioloop.socket_map.values())
            if isinstance(o, (FTPHandler, DTPHandler))]
    for obj in objs:
        sock = obj.socket
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_socket", None)
        try:
            if raw is not None:
                raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    # Data channels first (their close may queue a reply on a control channel, which
    # then goes nowhere), then the control channels; no TLS close_notify on either.
    for obj in sorted(objs, key=lambda o: isinstance(o, FTPHandler)):
        obj._error = True
        try:
            obj.close()
        except Exception:  # a half-dead channel may complain; it is gone either way
            log.exception("closing %r", obj)
    log.info("SIGUSR1: dropped %d connections", len(objs))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pasv-count", type=int, default=20)
    p.add_argument("--root", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log")
    p.add_argument("--run-as")
    p.add_argument("--quirks", default=os.environ.get("FERRY_QUIRKS", ""))
    args = p.parse_args()

    logging.basicConfig(filename=args.log, level=logging.DEBUG,
                        format="%(asctime)s %(message)s")
    # Commands and replies, not pyftpdlib's internal "[debug] call: ..." chatter.
    for h in logging.root.handlers:
        h.addFilter(lambda r: not str(r.msg).startswith("[debug]"))
    configure({q.strip() for q in args.quirks.split(",") if q.strip()})

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    ctx.use_certificate_chain_file(args.cert)
    ctx.use_privatekey_file(args.key)
    QuirkHandler.ssl_context = ctx

    auth = DummyAuthorizer()
    auth.add_user(args.user, args.password, os.path.abspath(args.root), perm="elradfmwMT")
    QuirkHandler.authorizer = auth
    QuirkHandler.banner = "ferry quirk FTPS server (pyftpdlib) ready."
    QuirkHandler.passive_ports = list(range(args.port + 1, args.port + 1 + args.pasv_count))
    # pasv-elsewhere: PASV names another address than the control connection's.
    QuirkHandler.masquerade_address = "127.0.0.2" if quirk("pasv-elsewhere") else None
    QuirkHandler.timeout = 300
    QuirkHandler.auth_failed_timeout = 1

    server = FTPServer((args.host, args.port), QuirkHandler)
    if args.run_as and os.getuid() == 0:
        pw = pwd.getpwnam(args.run_as)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    pending = []
    signal.signal(signal.SIGUSR1, lambda *_: pending.append(1))
    # SystemExit ends serve_forever, which then closes every connection.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def check_signals():
        if pending:
            pending.clear()
            drop_all_sessions(server)

    server.ioloop.call_every(0.05, check_signals)
    log.info("serving %s:%d as uid %d, quirks: %s", args.host, args.port, os.getuid(),
             ",".join(sorted(QUIRKS)) or "none")
    server.serve_forever()


if __name__ == "__main__":
    main()
