#!/usr/bin/env python3
"""A git smart-HTTP server over TLS for the integration tests: `git http-backend` as CGI,
behind HTTP Basic auth with one user and token. Standard library only.

Usage: git_https_server.py --port PORT --root PROJECT_ROOT --cert CERT --key KEY
                           --user USER --token TOKEN

Every request without the right credentials gets 401 with a Basic challenge.
Each request line is logged to stderr.
"""

import argparse
import base64
import hmac
import http.server
import os
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.parse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--token", required=True)
    options = parser.parse_args()

    git = shutil.which("git") or "git"
    expected = "Basic " + base64.b64encode(
        f"{options.user}:{options.token}".encode()
    ).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.serve()

        def do_POST(self):
            self.serve()

        def serve(self):
            authorization = self.headers.get("Authorization", "")
            if not hmac.compare_digest(authorization.encode(), expected.encode()):
                self.drain_body()
                body = b"authentication required\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return

            url = urllib.parse.urlsplit(self.path)
            environment = dict(os.environ)
            environment.update(
                {
                    "GIT_PROJECT_ROOT": options.root,
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": urllib.parse.unquote(url.path),
                    "QUERY_STRING": url.query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "REMOTE_USER": options.user,
                    "REMOTE_ADDR": self.client_address[0],
                    "GATEWAY_INTERFACE": "CGI/1.1",
                    "SERVER_PROTOCOL": "HTTP/1.1",
                }
            )
            for header in ("Content-Length", "Content-Encoding", "Git-Protocol"):
                value = self.headers.get(header)
                if value is not None:
                    environment["HTTP_" + header.upper().replace("-", "_")] = value
            if self.headers.get("Content-Length") is not None:
                environment["CONTENT_LENGTH"] = self.headers["Content-Length"]

            backend = subprocess.Popen(
                [git, "http-backend"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=environment,
            )
            # Stream the request body in a thread, so a large response cannot block it.
            feeder = threading.Thread(target=self.feed_body, args=(backend.stdin,))
            feeder.start()

            status = 200
            reason = "OK"
            headers = []
            while True:
                line = backend.stdout.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
                value = value.strip()
                if name.lower() == "status":
                    code, _, text = value.partition(" ")
                    status, reason = int(code), text or reason
                else:
                    headers.append((name, value))

            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                chunk = backend.stdout.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            feeder.join()
            backend.wait()

        def body_chunks(self):
            """The request body, as it arrives, whether sized or chunked."""
            length = self.headers.get("Content-Length")
            if length is not None:
                remaining = int(length)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk
            elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        # Trailers end with an empty line.
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()

        def feed_body(self, pipe):
            try:
                for chunk in self.body_chunks():
                    pipe.write(chunk)
            except BrokenPipeError:
                pass
            finally:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass

        def drain_body(self):
            for _ in self.body_chunks():
                pass

        def log_message(self, format, *args):
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.cert, options.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
