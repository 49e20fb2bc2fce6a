"""An app behind a tunnel-client for the group tests: one log line per request on stdout.

  python3 group_app.py NAME PREFIX
prints "listening PORT", then per request "begin ID" and "end ID" (ID from ?id=, after
?ms= milliseconds of sleep, or with ?hold=1 for as long as PREFIX.hold exists), "health
up|down" per /healthz (503 while PREFIX.down exists), and "empty" for a connection that
closed before sending a request. While PREFIX.broken exists every other request gets 500.
"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PREFIX = sys.argv[1], sys.argv[2]


def log(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.raw_requestline = b""
        if not self.raw_requestline:
            if not getattr(self, "served", False):
                log("empty")
            self.close_connection = True
            return
        self.served = True
        if not self.parse_request():
            return
        self.do_GET()
        self.wfile.flush()

    def send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/healthz":
            down = os.path.exists(PREFIX + ".down")
            log("health", "down" if down else "up")
            self.send(503 if down else 200, b"down\n" if down else b"ok\n")
            return
        rid = params.get("id", "-")
        log("begin", rid)
        ms = int(params.get("ms", "0"))
        if ms:
            time.sleep(ms / 1000)
        while params.get("hold") and os.path.exists(PREFIX + ".hold"):
            time.sleep(0.02)
        broken = os.path.exists(PREFIX + ".broken")
        try:
            self.send(500 if broken else 200, f"{NAME} {rid}\n".encode())
        except OSError:
            log("lost", rid)
            return
        log("end", rid)


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
log("listening", server.server_address[1])
server.serve_forever()
