"""An OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks, backed by
a real (tiny) transformers image-text-to-text model, with fault injection: queue actions in
`plan` ("429", "500", "sleep:SECONDS", "malformed") and each request takes the next one."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from fusionweave.experts.captioners import TransformersCaptioner


class ChatServer:
    def __init__(self, model: str, max_new_tokens: int = 16):
        self.captioner = TransformersCaptioner(model, max_new_tokens=max_new_tokens)
        self.plan: list[str] = []
        self.served = 0  # requests that reached the model
        self.received = 0
        self.headers_seen: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.closed = False

    def handle(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.received += 1
            action = self.plan.pop(0) if self.plan else ""
        if action in ("429", "500"):
            return int(action), b'{"error": {"message": "injected"}}', {"Retry-After": "0"} if action == "429" else {}
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":")[1]))
        if action == "malformed":
            return 200, b'{"choices": [{"message": {}}]}', {}
        content = body["messages"][0]["content"]
        prompt = next(c["text"] for c in content if c["type"] == "text")
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        with self._lock:  # one forward at a time, as a single-GPU server would
            if self.closed:  # a client's late retry after the test ended: a stopped server's answer
                return 503, b'{"error": {"message": "server stopped"}}', {}
            (caption,), (finish,) = self.captioner.generate([image], [prompt])
            self.served += 1
        reply = {"id": f"chatcmpl-{self.served}", "object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": caption},
                              "finish_reason": finish}]}
        return 200, json.dumps(reply).encode(), {}

    def __enter__(self) -> "ChatServer":
        self.captioner.setup()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                server.headers_seen.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                status, data, headers = server.handle(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 256
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            self.closed = True
            self.captioner.teardown()
