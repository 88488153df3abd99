"""The Azure and GCS tests' independent clients: Microsoft's
azure-storage-blob against Azurite, and plain HTTP on the JSON API of
fake-gcs-server (Google's documented upload, list and download calls),
both started by the test on 127.0.0.1. The inputs are those of s3.py.

    blob.py azure ENDPOINT seed CONTAINER     creates it and writes the inputs
    blob.py azure ENDPOINT dump CONTAINER PREFIX
    blob.py gcs ENDPOINT seed BUCKET
    blob.py gcs ENDPOINT dump BUCKET PREFIX
        dump prints one JSON document: every object's key under PREFIX and
        the rows of the published ones (as s3.py dump)
"""
import json
import os
import sys
import urllib.parse
import urllib.request

import s3

# Azurite's well-known development account (public, in Microsoft's docs)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azure(endpoint, container):
    """put(key, body), keys(prefix) and get(key) on an Azurite container."""
    from azure.storage.blob import BlobServiceClient

    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/devstoreaccount1;"
    )
    c = BlobServiceClient.from_connection_string(conn).get_container_client(container)

    def put(key, body):
        c.upload_blob(key, body, overwrite=True)

    def keys(prefix):
        return [b.name for b in c.list_blobs(name_starts_with=prefix)]

    def get(key):
        return c.download_blob(key).readall()

    def create():
        if not c.exists():
            c.create_container()

    return put, keys, get, create


def gcs(endpoint, bucket):
    """The same on a fake-gcs-server bucket, through the JSON API."""

    def call(method, path, body=None, ctype="application/octet-stream"):
        req = urllib.request.Request(endpoint + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req) as r:
            return r.read()

    def put(key, body):
        name = urllib.parse.quote(key, safe="")
        call("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", body)

    def keys(prefix):
        out, token = [], None
        while True:
            q = {"prefix": prefix}
            if token:
                q["pageToken"] = token
            page = json.loads(call("GET", f"/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(q)))
            out += [o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return out

    def get(key):
        name = urllib.parse.quote(key, safe="")
        return call("GET", f"/download/storage/v1/b/{bucket}/o/{name}?alt=media")

    def create():
        body = json.dumps({"name": bucket}).encode()
        call("POST", "/storage/v1/b", body, "application/json")

    return put, keys, get, create


def main():
    kind, endpoint, cmd, bucket = sys.argv[1:5]
    put, keys, get, create = {"azure": azure, "gcs": gcs}[kind](endpoint, bucket)
    if cmd == "seed":
        create()
        s3.seed(put)
    elif cmd == "dump":
        s3.dump(keys(sys.argv[5]), get)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # as s3.py: leave without pyarrow's shutdown
    os._exit(0)
