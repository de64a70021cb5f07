"""A hostile FHIR server in its own process: answers every GET with a valid Bundle, one byte a second.

Run as `python -m tests.support.trickle_server PORT`. Its own process keeps its hundreds of sleeping threads off the
test process's GIL, so what a test measures is the service under test, not the stub.
"""

from __future__ import annotations

import http.server
import json
import sys
import time
from typing import Any

BODY = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode()


class Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        try:
            for index in range(len(BODY)):
                self.wfile.write(BODY[index:index + 1])
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            return

    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer.request_queue_size = 256  # many slow calls connect at once
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Trickle)
    server.daemon_threads = True
    server.serve_forever()
