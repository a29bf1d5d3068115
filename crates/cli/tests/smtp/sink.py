"""A real SMTP server (aiosmtpd) for the email channel tests.

Prints one JSON line with the port, then one JSON line per message received: envelope,
headers, and each MIME leaf part's content type and decoded body. Recipients starting with
"bounce" are refused with 550 (a hard bounce), those starting with "full" with 452 (a
temporary refusal: mailbox full).
"""
import email
import json
import socket
import time
from email import policy

from aiosmtpd.controller import Controller


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce"):
            return "550 5.1.1 <%s>: no such user" % address
        if address.startswith("full"):
            return "452 4.2.2 <%s>: mailbox full" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        parts = [
            {"type": part.get_content_type(), "body": part.get_content()}
            for part in msg.walk()
            if not part.is_multipart()
        ]
        print(json.dumps({
            "peer": "%s:%s" % tuple(session.peer[:2]),
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
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(json.dumps({"port": port}), flush=True)
while True:
    time.sleep(3600)
