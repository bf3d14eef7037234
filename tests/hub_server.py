"""A loopback server speaking the part of the Hugging Face Hub API that huggingface_hub uses to
create a dataset repo, validate a card and commit files through the LFS (non-Xet) path."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict[str, Any]] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.uploads = 0
        self.commits = 0
        self.unauthorized = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, code: int, payload: Any = None, ctype: str = "application/json") -> None:
                body = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    hub.unauthorized += 1
                    self._send(401, {"error": "Invalid credentials"})
                    return False
                return True

            def do_PUT(self) -> None:  # noqa: N802
                hub.requests.append(("PUT", self.path))
                data = self._body()
                if self.path.startswith("/lfs-upload/"):
                    oid = self.path.rsplit("/", 1)[1]
                    if hashlib.sha256(data).hexdigest() != oid:
                        return self._send(400, {"error": "sha256 mismatch"})
                    hub.lfs[oid] = data
                    hub.uploads += 1
                    return self._send(200, {})
                self._send(404, {"error": f"no route PUT {self.path}"})

            def do_GET(self) -> None:  # noqa: N802
                hub.requests.append(("GET", self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 6 and parts[:2] == ["api", "datasets"] and parts[4] == "revision":
                    repo = f"{parts[2]}/{parts[3]}"
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"})
                    files = hub.repos[repo]["files"]
                    sha = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
                    return self._send(200, {"_id": repo, "id": repo, "sha": sha, "private": bool(hub.repos[repo]["private"]),
                                            "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [],
                                            "downloads": 0, "likes": 0, "disabled": False, "gated": False,
                                            "lastModified": "2026-11-28T00:00:00.000Z",
                                            "createdAt": "2026-11-28T00:00:00.000Z"})
                self._send(404, {"error": f"no route GET {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                hub.requests.append(("POST", self.path))
                raw = self._body()
                path = self.path.split("?")[0]
                if path == "/api/validate-yaml":
                    content = json.loads(raw)["content"]
                    header = yaml.safe_load(content.split("---")[1])
                    if not header.get("license") or not header.get("configs"):
                        return self._send(400, {"error": "license and configs are required"})
                    return self._send(200, {"warnings": []})
                if not self._authorised():
                    return
                if path == "/api/repos/create":
                    req = json.loads(raw)
                    repo = f"{req.get('organization')}/{req['name']}" if req.get("organization") else req["name"]
                    url = f"http://{self.headers['Host']}/datasets/{repo}"
                    if repo in hub.repos:
                        return self._send(409, {"error": "You already created this dataset repo", "url": url})
                    private = req.get("private") if "private" in req else req.get("visibility") == "private"
                    hub.repos[repo] = {"private": private, "files": {}, "type": req.get("type")}
                    return self._send(200, {"url": url, "name": repo})
                parts = path.strip("/").split("/")
                if path.endswith(".git/info/lfs/objects/batch"):
                    req = json.loads(raw)
                    objs = []
                    for o in req["objects"]:
                        if o["oid"] in hub.lfs:
                            objs.append({"oid": o["oid"], "size": o["size"]})  # already stored: nothing to send
                        else:
                            objs.append({"oid": o["oid"], "size": o["size"], "authenticated": True, "actions": {
                                "upload": {"href": f"http://{self.headers['Host']}/lfs-upload/{o['oid']}"}}})
                    return self._send(200, {"transfer": "basic", "objects": objs})
                if len(parts) >= 6 and parts[:2] == ["api", "datasets"] and parts[4] == "preupload":
                    repo = f"{parts[2]}/{parts[3]}"
                    files = hub.repos[repo]["files"]
                    out = []
                    for f in json.loads(raw)["files"]:
                        lfs = f["path"].endswith((".tar", ".parquet", ".png")) or f["size"] > 1_000_000
                        prev = files.get(f["path"])
                        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                                    "oid": prev["oid"] if prev else None})
                    return self._send(200, {"files": out, "commitOid": "0" * 40})
                if len(parts) >= 6 and parts[:2] == ["api", "datasets"] and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    files = hub.repos[repo]["files"]
                    for line in raw.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            data = base64.b64decode(op["value"]["content"])
                            files[op["value"]["path"]] = {"oid": git_blob_sha1(data), "size": len(data)}
                        elif op["key"] == "lfsFile":
                            v = op["value"]
                            if v["oid"] not in hub.lfs:
                                return self._send(422, {"error": f"LFS object {v['oid']} was never uploaded"})
                            files[v["path"]] = {"oid": v["oid"], "size": v["size"]}
                    hub.commits += 1
                    oid = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
                    return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/datasets/{repo}/commit/{oid}",
                                            "commitOid": oid, "pullRequestUrl": None})
                self._send(404, {"error": f"no route POST {self.path}"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
