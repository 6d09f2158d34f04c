#!/usr/bin/python3
"""A real SMTP server (Debian's aiosmtpd) that REQUIRES STARTTLS and AUTH,
for ferry's SMTP login tests. aiosmtpd's command line has no authenticator,
so this uses its Controller API.

  /usr/bin/python3 scripts/smtp-auth-server.py PORT MAILDIR CERT KEY USER PASSWORD

Prints "ready" once listening on 127.0.0.1:PORT; runs until killed.
"""
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, password = sys.argv[1:7]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    return AuthResult(success=ok, handled=False)


tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
controller = Controller(
    Mailbox(maildir),
    hostname="127.0.0.1",
    port=int(port),
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=True,
    require_starttls=True,
    tls_context=tls,
)
controller.start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
controller.stop()
