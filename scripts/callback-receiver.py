#!/usr/bin/env python3
"""A stand-in for your system behind the web hook: prints every signed reply Switchboard
POSTs to it, checks the signature, and answers 200. Only the Python standard library.

    python3 scripts/callback-receiver.py [PORT] [SECRET]      (defaults: 9000 dev-secret-change-me)
"""
import hashlib, hmac, http.server, json, sys, time

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
SECRET = (sys.argv[2] if len(sys.argv) > 2 else "dev-secret-change-me").encode()

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ts = self.headers.get("x-switchboard-timestamp", "")
        given = self.headers.get("x-switchboard-signature", "")
        expected = "v1=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
        ok = fresh and hmac.compare_digest(given, expected)
        reply = json.loads(body or b"{}")
        print(f"{'signed ok' if ok else 'BAD SIGNATURE'} id={reply.get('id')} "
              f"thread={reply.get('external_thread')} author={reply.get('author')}: {reply.get('text')}",
              flush=True)
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass

print(f"listening on 127.0.0.1:{PORT}", flush=True)
http.server.HTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
