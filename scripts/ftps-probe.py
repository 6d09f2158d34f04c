#!/usr/bin/env python3
"""Small FTPS probe for scripts/ftp-server-selftest.sh (stdlib only).

Usage:
  ftps-probe.py [--implicit] --port P --ca CA.pem [--host H] [--user U] [--password PW] ACTION [ARG]

Actions:
  feat             print the server's FEAT reply (multi-line, as sent)
  hash NAME        OPTS HASH SHA-256 then HASH NAME; print the hex digest
  reuse-required   exit 0 if a data connection WITHOUT TLS session reuse is
                   refused while one WITH reuse works; exit 1 otherwise
  tls-version      print the TLS version of the control connection
  roundtrip FILE   upload FILE, list, download and compare, rename, delete;
                   data connections end with a full TLS shutdown (close_notify
                   both ways), which vsftpd needs on TLS 1.3 uploads
"""
import argparse
import ftplib
import io
import os
import socket
import ssl
import sys


class ProbeFTP(ftplib.FTP_TLS):
    """FTP_TLS with optional implicit TLS and optional data-connection session reuse."""

    def __init__(self, *args, implicit=False, reuse=True, **kwargs):
        self.implicit = implicit
        self.reuse = reuse
        super().__init__(*args, **kwargs)

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        # Implicit FTPS: TLS from the first byte, no AUTH TLS.
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd, rest=None):
        # Stock ftplib never resumes the control session on data connections.
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = self.sock.session if self.reuse else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def names(ftp):
    """NLST that treats "no files" (ProFTPD: 450, some servers: 550) as an empty list."""
    try:
        return ftp.nlst()
    except (ftplib.error_temp, ftplib.error_perm) as e:
        if "no files" in str(e).lower():
            return []
        raise


def login(args, reuse=True):
    ctx = ssl.create_default_context(cafile=args.ca)
    ftp = ProbeFTP(context=ctx, implicit=args.implicit, reuse=reuse, timeout=15)
    ftp.connect(args.host, args.port)
    ftp.login(args.user, args.password)
    # Implicit FTPS still needs PBSZ 0 / PROT P for protected data connections.
    ftp.prot_p()
    return ftp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="ferrytest")
    p.add_argument("--password", default="ferrytest-pw")
    p.add_argument("--ca", required=True)
    p.add_argument("--implicit", action="store_true")
    p.add_argument("action", choices=["feat", "hash", "reuse-required", "tls-version", "roundtrip"])
    p.add_argument("arg", nargs="?")
    args = p.parse_args()

    if args.action == "feat":
        ftp = login(args)
        # sendcmd returns the whole multi-line 211 reply.
        print(ftp.sendcmd("FEAT"))
        ftp.quit()
    elif args.action == "tls-version":
        ftp = login(args)
        print(ftp.sock.version())
        ftp.quit()
    elif args.action == "hash":
        ftp = login(args)
        ftp.sendcmd("OPTS HASH SHA-256")
        reply = ftp.sendcmd("HASH " + args.arg)
        # "213 SHA-256 0-N <hex> name" (ProFTPD prefixes a 213- line).
        last = reply.splitlines()[-1].split()
        print(last[3].lower())
        ftp.quit()
    elif args.action == "roundtrip":
        ftp = login(args)
        data = open(args.arg, "rb").read()
        base = "probe-%d" % os.getpid()
        ftp.voidcmd("TYPE I")
        # storbinary unwraps the TLS data connection: it waits for the server's close_notify.
        ftp.storbinary("STOR %s.tmp" % base, io.BytesIO(data))
        listed = names(ftp)
        assert base + ".tmp" in listed, "uploaded file not listed: %r" % listed
        got = io.BytesIO()
        ftp.retrbinary("RETR %s.tmp" % base, got.write)
        assert got.getvalue() == data, "download differs from upload"
        ftp.rename(base + ".tmp", base + ".dat")
        listed = names(ftp)
        assert base + ".dat" in listed and base + ".tmp" not in listed, "rename not visible: %r" % listed
        ftp.delete(base + ".dat")
        assert base + ".dat" not in names(ftp), "delete not visible"
        print("roundtrip ok over %s (%d bytes)" % (ftp.sock.version(), len(data)))
        ftp.quit()
    elif args.action == "reuse-required":
        ftp = login(args, reuse=False)
        refused = False
        try:
            ftp.retrlines("LIST", lambda line: None)
        except (ftplib.Error, ssl.SSLError, OSError, EOFError) as e:
            refused = True
            print("without reuse: refused (%s)" % str(e).strip().splitlines()[0])
        try:
            ftp.quit()
        except Exception:
            pass
        if not refused:
            print("without reuse: data connection ACCEPTED (server does not require reuse)")
        ftp = login(args, reuse=True)
        ftp.retrlines("LIST", lambda line: None)
        print("with reuse: accepted")
        ftp.quit()
        sys.exit(0 if refused else 1)


if __name__ == "__main__":
    main()
