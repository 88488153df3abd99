"""The object-store tests' independent client: boto3 (and pyarrow for
Parquet) against the S3 server the test started.

    s3.py ENDPOINT seed BUCKET     writes the inputs of tests/it/lake.rs
    s3.py ENDPOINT put BUCKET KEY FILE
    s3.py ENDPOINT mkbucket BUCKET
    s3.py ENDPOINT head BUCKET KEY   prints the object's size and ETag
    s3.py ENDPOINT dump BUCKET PREFIX
        prints one JSON document: every object's key under PREFIX and the
        rows of the published ones (JSON Lines, CSV, Parquet; gzip by name)
"""
import csv
import gzip
import io
import json
import os
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def seed(put):
    """CSV under hive directories, gzip JSON Lines, a Parquet file of
    several row groups, and objects a reader must skip, each written with
    `put(key, body)` (tests/lake/blob.py seeds Azure and GCS with it too)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for region, ids in (("eu", range(0, 50)), ("us", range(50, 120))):
        body = "id,amount\n" + "".join(f"{i},{i * 1.5}\n" for i in ids)
        put(f"in/csv/region={region}/part-0.csv", body.encode())
    put("in/csv/_SUCCESS", b"")
    put("in/csv/region=eu/.part-1.csv.crc", b"not,csv\n\x00")
    lines = "".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(300))
    put("in/json/a.jsonl.gz", gzip.compress(lines.encode()))
    table = pa.table({"id": pa.array(range(10_000), pa.int64()), "v": pa.array([i % 7 for i in range(10_000)], pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1_000)
    put("in/pq/t.parquet", buf.getvalue())


def rows_of(key, body):
    if key.endswith(".gz"):
        body = gzip.decompress(body)
        key = key[:-3]
    if key.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(body)).to_pylist()
    if key.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(body.decode())))
    if key.endswith(".json"):
        return json.loads(body)
    return [json.loads(l) for l in body.decode().splitlines() if l.strip()]


def dump(keys, get):
    """Prints one JSON document: `keys` and the rows of the published ones
    (hidden `.` and `_` objects skipped), each read with `get(key)`."""
    rows = []
    for k in keys:
        name = k.rsplit("/", 1)[-1]
        if name.startswith(".") or name.startswith("_"):
            continue
        for r in rows_of(k, get(k)):
            r["_object"] = k
            rows.append(r)
    print(json.dumps({"keys": sorted(keys), "rows": rows}))


def main():
    endpoint, cmd = sys.argv[1], sys.argv[2]
    s3 = client(endpoint)
    if cmd == "seed":
        bucket = sys.argv[3]
        seed(lambda key, body: s3.put_object(Bucket=bucket, Key=key, Body=body))
    elif cmd == "put":
        with open(sys.argv[5], "rb") as f:
            s3.put_object(Bucket=sys.argv[3], Key=sys.argv[4], Body=f.read())
    elif cmd == "mkbucket":
        s3.create_bucket(Bucket=sys.argv[3])
    elif cmd == "head":
        h = s3.head_object(Bucket=sys.argv[3], Key=sys.argv[4])
        print(json.dumps({"size": h["ContentLength"], "etag": h["ETag"]}))
    elif cmd == "dump":
        bucket, prefix = sys.argv[3], sys.argv[4]
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        dump(keys, lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read())
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # pyarrow's threads next to boto3's sometimes abort the interpreter's
    # shutdown ("terminate called without an active exception"): the work
    # is done, leave without it
    os._exit(0)
