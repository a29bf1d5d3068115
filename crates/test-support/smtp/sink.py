"""A real SMTP server (aiosmtpd) for the email channel tests.

Prints one JSON line with the port, then one JSON line per message received: envelope,
headers, and each MIME leaf part's content type and decoded body. Recipients starting with
"bounce" are refused with 550 (a hard bounce), those starting with "full" with 452 (a
temporary refusal: mailbox full). With SINK_DELAY_MS set, each message is answered only
after that long (a slow relay).
"""
import asyncio
import email
import os
import json
import socket
import ssl
import sys
import time
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce"):
            return "550 5.1.1 <%s>: no such user" % address
        if address.startswith("full"):
            return "452 4.2.2 <%s>: mailbox full" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(int(os.environ.get("SINK_DELAY_MS", "0")) / 1000)
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        parts = [
            {"type": part.get_content_type(), "body": part.get_content()}
            for part in msg.walk()
            if not part.is_multipart()
        ]
        print(json.dumps({
            "peer": "%s:%s" % tuple(session.peer[:2]),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": (session.auth_data.login.decode()
                      if isinstance(session.auth_data, LoginPassword) else None),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content_type": msg.get_content_type(),
            "headers": {k: str(v) for k, v in msg.items()},
            "parts": parts,
        }), flush=True)
        return "250 2.0.0 queued"


probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
options = {}
# Optional: sink.py CERT KEY USER PASSWORD [implicit] -> STARTTLS required (or, with
# "implicit", TLS from the first byte), then AUTH required.
if len(sys.argv) in (5, 6):
    cert, key, user, password = sys.argv[1:5]
    implicit = sys.argv[5:] == ["implicit"]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == user.encode() and auth_data.password == password.encode())
        # handled=False: aiosmtpd then answers 535 itself on failure.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    if implicit:
        # aiosmtpd sees only STARTTLS as TLS for auth_require_tls; the socket is TLS anyway.
        options = dict(ssl_context=tls, authenticator=authenticator, auth_required=True,
                       auth_require_tls=False)
    else:
        options = dict(tls_context=tls, require_starttls=True, authenticator=authenticator,
                       auth_required=True, auth_require_tls=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **options)
controller.start()
print(json.dumps({"port": port}), flush=True)
while True:
    time.sleep(3600)
