"""A minimal Confluent-compatible schema registry for the tests (in memory).

No schema registry can be installed from the package registries this project
builds from, so the tests run this one. It implements the REST calls that
Velostream and confluent-kafka's Python serializers make:
POST /subjects/{s}/versions, GET /subjects/{s}/versions/latest,
GET /schemas/ids/{id}, GET /subjects. docker-compose.yml runs the real one.

Usage: python3 schema_registry.py PORT
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
schemas = {}   # id -> schema text
subjects = {}  # subject -> [id, ...]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parts(self):
        return [p for p in self.path.split("?")[0].split("/") if p]

    def do_GET(self):
        p = self.parts()
        with lock:
            if p[:2] == ["schemas", "ids"] and len(p) >= 3:
                sid = int(p[2])
                if sid in schemas:
                    return self.reply(200, {"schema": schemas[sid]})
                return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
            if p == ["subjects"]:
                return self.reply(200, sorted(subjects))
            if len(p) == 4 and p[0] == "subjects" and p[2] == "versions":
                ids = subjects.get(p[1])
                if not ids:
                    return self.reply(404, {"error_code": 40401, "message": "Subject not found"})
                v = len(ids) if p[3] == "latest" else int(p[3])
                sid = ids[v - 1]
                return self.reply(200, {"subject": p[1], "version": v, "id": sid, "schema": schemas[sid]})
        self.reply(404, {"error_code": 404, "message": "not found"})

    def do_POST(self):
        p = self.parts()
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if len(p) == 3 and p[0] == "subjects" and p[2] == "versions":
            text = body["schema"]
            with lock:
                sid = next((i for i, s in schemas.items() if s == text), None)
                if sid is None:
                    sid = len(schemas) + 1
                    schemas[sid] = text
                ids = subjects.setdefault(p[1], [])
                if sid not in ids:
                    ids.append(sid)
                return self.reply(200, {"id": sid, "version": ids.index(sid) + 1, "subject": p[1], "schema": text})
        self.reply(404, {"error_code": 404, "message": "not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
