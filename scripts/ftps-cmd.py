#!/usr/bin/env python3
"""Send raw commands to an FTPS server and print every reply as sent (stdlib only).

For scripts/ftp-server-selftest.sh and for looking at a server by hand.

Usage:
  ftps-cmd.py [--implicit] --port P --ca CA.pem [--host H] [--user U]
              [--password PW] [--no-login] [--no-reuse] STEP...

Logs in over TLS (AUTH TLS, or implicit TLS; then PBSZ 0 / PROT P) unless
--no-login, then runs each STEP in order on the same control connection:
  "SIZE x"              any raw command; its whole reply is printed
  @put LOCAL REMOTE     STOR LOCAL as REMOTE over a protected data connection
  @rest-put N LOCAL REMOTE
                        REST N, then STOR of LOCAL's bytes from offset N
  @append LOCAL REMOTE  APPE LOCAL to REMOTE
  @get REMOTE LOCAL     RETR REMOTE into LOCAL
  @list [PATH]          MLSD-free NLST of PATH; prints the names
  @login2               log in a SECOND session (same user) while this one
                        stays open; prints its replies (welcome, USER, PASS)
  @sleep SECONDS        pause
Output: one "> STEP" line per step, then the reply lines ("< ..."), or
"! ERROR-TEXT" when the step failed (reply 4xx/5xx, closed connection,
timeout). A closed control connection ends the run ("! closed ...").
The exit status is 0 when every step ran (whatever the replies were), 1 when
the login failed, 2 on a usage error.
"""
import argparse
import ftplib
import socket
import ssl
import sys
import time


class Client(ftplib.FTP_TLS):
    """FTP_TLS with implicit TLS, data session reuse (optional) and raw reply capture."""

    def __init__(self, *args, implicit=False, reuse=True, **kwargs):
        self.implicit = implicit
        self.reuse = reuse
        self.lines = []
        super().__init__(*args, **kwargs)

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def getline(self):
        line = super().getline()
        self.lines.append(line)
        return line

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = self.sock.session if self.reuse else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size

    def take(self):
        out, self.lines = self.lines, []
        return out


def login(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    c = Client(context=ctx, implicit=args.implicit, reuse=not args.no_reuse, timeout=args.timeout)
    c.connect(args.host, args.port)
    if args.no_login:
        if not args.implicit:
            c.auth()
        return c
    c.login(args.user, args.password)
    c.prot_p()
    return c


def run_step(c, args, step):
    words = step.split()
    if not words:
        return
    op = words[0]
    if op == "@put":
        with open(words[1], "rb") as f:
            c.storbinary("STOR " + words[2], f)
    elif op == "@rest-put":
        off = int(words[1])
        with open(words[2], "rb") as f:
            f.seek(off)
            c.voidcmd("TYPE I")
            with c.transfercmd("STOR " + words[3], rest=off) as conn:
                conn.sendall(f.read())
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
            c.voidresp()
    elif op == "@append":
        with open(words[1], "rb") as f:
            c.storbinary("APPE " + words[2], f)
    elif op == "@get":
        with open(words[2], "wb") as f:
            c.retrbinary("RETR " + words[1], f.write)
    elif op == "@list":
        for name in c.nlst(*words[1:2]):
            print("  name: " + name)
    elif op == "@login2":
        # The second session's failure is its reply, not this session's: print it, go on.
        second = Client(context=c.context, implicit=args.implicit, timeout=args.timeout)
        try:
            second.connect(args.host, args.port)
            if not args.implicit:
                second.auth()
            second.login(args.user, args.password)
            err = None
        except (ftplib.Error, OSError, EOFError) as e:
            err = e
        for line in second.take():
            print("  < " + line)
        if err is not None:
            print("  ! %s" % (str(err) or "connection closed by the server"))
        try:
            second.close()
        except OSError:
            pass
    elif op == "@sleep":
        time.sleep(float(words[1]))
    else:
        c.putcmd(step)
        c.getmultiline()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--user", default="ferrytest")
    p.add_argument("--password", default="ferrytest-pw")
    p.add_argument("--implicit", action="store_true")
    p.add_argument("--no-login", action="store_true")
    p.add_argument("--no-reuse", action="store_true")
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("steps", nargs="*")
    args = p.parse_args()
    try:
        c = login(args)
    except (OSError, EOFError, ftplib.Error) as e:
        print("! login failed: %s" % e)
        return 1
    c.take()
    for step in args.steps:
        print("> " + step)
        try:
            run_step(c, args, step)
            err = None
        except (ftplib.Error, OSError, EOFError) as e:
            err = e
        for line in c.take():
            print("< " + line)
        if err is not None:
            if isinstance(err, EOFError) or (isinstance(err, ftplib.Error) and str(err).startswith("421")):
                print("! closed: %s" % (str(err) or "connection closed by the server"))
                return 0
            print("! %s" % err)
    try:
        c.quit()
    except (OSError, EOFError, ftplib.Error):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
