"""The Delta tests' independent clients: delta-rs for Python (`deltalake`)
and DuckDB's delta extension (loaded offline from its wheel), never
velo's own code. A table on S3 is reached through the AWS_* environment
the test sets (moto on 127.0.0.1).

    delta.py read TABLE [VERSION]
        one JSON document: the rows (sorted by every column), the version,
        the number of data files, the operations of the history (oldest
        first), the partition columns, the schema's column names, and the
        txn versions of the app ids given in $DELTA_APPS (comma-separated)
    delta.py duck TABLE        the rows as DuckDB's delta_scan reads them
    delta.py write TABLE MODE JSON_ROWS [PARTITION_COLUMN]
        appends (MODE append) or overwrites the rows of a JSON array
    delta.py delete TABLE PREDICATE
    delta.py checkpoints TABLE the names of the checkpoint files in the log
"""
import glob
import json
import os
import sys

import pyarrow as pa


def storage(table):
    if not table.startswith("s3://"):
        return None
    return {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ALLOW_HTTP": "true",
        "AWS_CONDITIONAL_PUT": "etag",
    }


def rows_of(table):
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def read(path, version=None):
    from deltalake import DeltaTable

    dt = DeltaTable(path, storage_options=storage(path))
    if version is not None:
        dt.load_as_version(int(version))
    apps = [a for a in os.environ.get("DELTA_APPS", "").split(",") if a]
    history = list(reversed(dt.history()))
    out = {
        "rows": rows_of(dt.to_pyarrow_table()),
        "version": dt.version(),
        "files": len(dt.file_uris()),
        "operations": [h.get("operation") for h in history],
        "partitions": dt.metadata().partition_columns,
        "columns": [f.name for f in dt.schema().fields],
        "txn": {a: dt.transaction_version(a) for a in apps},
    }
    print(json.dumps(out, default=str))


def duck(path):
    import duckdb
    import duckdb_extension_delta

    ext = glob.glob(
        os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension")
    )[0]
    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    con.execute(f"LOAD '{ext}'")
    t = con.execute(f"SELECT * FROM delta_scan('{path}')").arrow()
    if hasattr(t, "read_all"):
        t = t.read_all()
    print(json.dumps(rows_of(t), default=str))


def write(path, mode, rows, partition=None, schema_mode=None):
    """`partition`: the partition columns, comma-separated."""
    from deltalake import write_deltalake

    t = pa.Table.from_pylist(json.loads(rows))
    write_deltalake(
        path,
        t,
        mode=mode,
        partition_by=partition.split(",") if partition else None,
        schema_mode=schema_mode or None,
        storage_options=storage(path),
    )


def delete(path, predicate):
    from deltalake import DeltaTable

    DeltaTable(path, storage_options=storage(path)).delete(predicate)


def checkpoints(path):
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, "_delta_log", "*.checkpoint*.parquet")))
    print(json.dumps(names))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"read": read, "duck": duck, "write": write, "delete": delete, "checkpoints": checkpoints}[cmd](*args)
    # delta-rs's runtime threads sometimes abort the interpreter's teardown
    # ("terminate called without an active exception"): the work is done
    # and printed, so leave without it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
