"""An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on purpose, for the LLM tests.

Behaviour is chosen per request by a ``script(number, message) -> action`` callable; ``number`` counts every
request to /chat/completions (from 1), ``message`` is the user message. Actions:

    ("ok", text)                 200 with ``text`` as the answer ("" = an empty answer)
    ("status", code, headers)    an error status with an OpenAI-style error body
    ("sleep", seconds)           wait, then answer normally (a timeout when longer than the client's)
    ("drop",)                    close the connection without answering
    ("truncated",)               200 with a JSON body cut in the middle
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def default_answer(message: str) -> str:
    return "Summary: " + " ".join(message.split()[:40])


def always_ok(number: int, message: str):
    return ("ok", default_answer(message))


class FakeLLMServer:
    """Start with ``with FakeLLMServer(script) as server: server.base_url``."""

    def __init__(self, script: Callable[[int, str], tuple] = always_ok, api_key: str = "sk-test-key"):
        self.script, self.api_key = script, api_key
        self.requests: list[dict] = []  # every chat request: {"message", "authorization", "body"}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                # like real servers, echo the key it got: the client must never let it reach logs or errors
                got = self.headers.get("Authorization", "")
                body = {"error": {"message": f"Incorrect API key provided: {got}", "type": "invalid_request_error",
                                  "code": "invalid_api_key"}}
                self._send(401, json.dumps(body).encode())
                return False

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "test"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                message = next((m["content"] for m in body.get("messages", []) if m["role"] == "user"), "")
                with server.lock:
                    server.requests.append({"message": message, "body": body})
                    number = len(server.requests)
                action = server.script(number, message)
                kind = action[0]
                if kind == "sleep":
                    time.sleep(action[1])
                    action = ("ok", default_answer(message))
                    kind = "ok"
                if kind == "ok":
                    self._send(200, json.dumps(completion(body.get("model", "fake-model"), action[1])).encode())
                elif kind == "status":
                    code, headers = action[1], (action[2] if len(action) > 2 else {})
                    error = {"error": {"message": f"fake error {code}", "type": "server_error", "code": code}}
                    self._send(code, json.dumps(error).encode(), headers)
                elif kind == "truncated":
                    text = json.dumps(completion(body.get("model", "fake-model"), default_answer(message)))
                    self._send(200, text[: len(text) // 2].encode())
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    raise ValueError(f"unknown action {action!r}")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # dropped connections are on purpose
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def messages(self) -> list[str]:
        with self.lock:
            return [request["message"] for request in self.requests]

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(model: str, text: str) -> dict:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def serve_forever_from_cli() -> None:  # pragma: no cover - used by the kill/resume test's subprocess
    import sys

    port_file = sys.argv[1]
    with FakeLLMServer() as server:
        with open(port_file, "w") as handle:
            handle.write(server.base_url)
        while True:
            time.sleep(1)
