"""A tiny HTTP server on 127.0.0.1 whose answers the test decides: the
services ficus calls itself (a JWKS URL, a session service). respond(handler)
returns (status, body bytes, content type); every GET is counted."""

import http.server
import threading


class ScriptedServer:
    def __init__(self, path, respond):
        self.gets = 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.gets += 1
                status, body, ctype = respond(self)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}{path}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
