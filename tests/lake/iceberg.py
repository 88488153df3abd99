"""The Iceberg tests' independent clients: pyiceberg and DuckDB's iceberg
extension (loaded offline from its wheel), never velo's own code. The
catalog comes from $ICEBERG_CATALOG, a JSON object of pyiceberg catalog
properties (a SQL catalog on a SQLite file, or a REST catalog with its S3
settings); its name is "default", velo's default catalog_name.

    iceberg.py read TABLE [SNAPSHOT_ID]
        one JSON document: the rows (sorted), the snapshots (oldest first:
        id, parent, operation, summary), the partition spec's fields
        (name, transform), the column names, the table properties, the
        metadata file, and the number of data files of the current snapshot
    iceberg.py duck TABLE      the rows as DuckDB's iceberg_scan reads the
                               table's current metadata file (local tables)
    iceberg.py write TABLE JSON_ROWS [PARTITION_TRANSFORM COLUMN]
                               appends the rows, creating the table if missing
    iceberg.py delete TABLE COLUMN VALUE
                               deletes the rows where COLUMN = VALUE
    iceberg.py eqdelete TABLE COLUMN VALUE...
                               commits an equality-delete file of COLUMN =
                               each VALUE (merge-on-read, as Flink writes
                               upserts; unpartitioned tables)
    iceberg.py duckrest SQL...  runs the statements in DuckDB with the REST
                               catalog attached as `cat` (DuckDB's DELETE
                               and UPDATE write position-delete files:
                               another engine's merge-on-read table);
                               prints the last statement's rows
"""
import glob
import json
import os
import sys

import pyarrow as pa


def catalog():
    from pyiceberg.catalog import load_catalog

    props = json.loads(os.environ["ICEBERG_CATALOG"])
    if props.get("type") == "sql":
        # a new catalog: its file's folder and the warehouse
        os.makedirs(os.path.dirname(props["uri"].removeprefix("sqlite://")), exist_ok=True)
        if "://" not in props["warehouse"].removeprefix("file://"):
            os.makedirs(props["warehouse"].removeprefix("file://"), exist_ok=True)
    return load_catalog("default", **props)


def rows_of(table):
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def read(name, snapshot=None):
    t = catalog().load_table(name)
    scan = t.scan(snapshot_id=int(snapshot)) if snapshot else t.scan()
    snaps = []
    for s in sorted(t.metadata.snapshots, key=lambda s: (s.sequence_number or 0, s.timestamp_ms)):
        summary = s.summary.model_dump() if hasattr(s.summary, "model_dump") else dict(s.summary)
        op = summary.pop("operation", None)
        snaps.append(
            {
                "id": s.snapshot_id,
                "parent": s.parent_snapshot_id,
                "operation": str(getattr(op, "value", op)),
                "summary": {k: str(v) for k, v in summary.items()},
            }
        )
    current = t.current_snapshot()
    files = len(list(t.scan().plan_files())) if current else 0
    out = {
        "rows": rows_of(scan.to_arrow()),
        "snapshots": snaps,
        "current": current.snapshot_id if current else None,
        "partition": [
            {"name": f.name, "transform": str(f.transform)} for f in t.spec().fields
        ],
        "columns": [f.name for f in t.schema().fields],
        "required": [f.name for f in t.schema().fields if f.required],
        "properties": dict(t.properties),
        "metadata": t.metadata_location,
        "files": files,
    }
    print(json.dumps(out, default=str))


def duck_connection(*extensions):
    """DuckDB with `extensions` loaded from their wheels (offline)."""
    import importlib

    import duckdb

    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    for ext in extensions:
        mod = importlib.import_module(f"duckdb_extension_{ext}")
        path = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", "*", f"{ext}.duckdb_extension"))[0]
        con.execute(f"LOAD '{path}'")
    return con


def duck(name):
    t = catalog().load_table(name)
    # iceberg reads manifests with the avro extension: both from their wheels
    con = duck_connection("avro", "iceberg")
    meta = t.metadata_location.removeprefix("file://")
    rel = con.execute(f"SELECT * FROM iceberg_scan('{meta}')").arrow()
    if hasattr(rel, "read_all"):
        rel = rel.read_all()
    print(json.dumps(rows_of(rel), default=str))


def write(name, rows, transform=None, column=None):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import parse_transform

    cat = catalog()
    data = pa.Table.from_pylist(json.loads(rows))
    ns = name.rsplit(".", 1)[0]
    try:
        cat.create_namespace(ns)
    except Exception:
        pass
    try:
        t = cat.load_table(name)
    except Exception:
        t = cat.create_table(name, schema=data.schema)
        if transform:
            with t.update_spec() as u:
                u.add_field(column, parse_transform(transform), f"{column}_{transform.split('[')[0]}")
            t = cat.load_table(name)
    t.append(data)
    print(t.current_snapshot().snapshot_id)


def delete(name, column, value):
    from pyiceberg.expressions import EqualTo

    t = catalog().load_table(name)
    t.delete(EqualTo(column, int(value)))
    print(t.current_snapshot().snapshot_id)


def eqdelete(name, column, *values):
    """An equality-delete file of COLUMN = each value, committed as its own
    snapshot: the merge-on-read upserts Flink writes. pyiceberg writes no
    such file, so it is made here with pyiceberg's own writers, as the
    Iceberg spec lays it out: a Parquet file of the column (its field id),
    listed in a manifest whose content is "deletes" (pyiceberg's fast
    append, its added file the delete file, its operation "delete"); the
    snapshot's sequence number makes it apply to rows written before it
    only."""
    import uuid

    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestWriterV2
    from pyiceberg.schema import Schema
    from pyiceberg.table.snapshots import Operation
    from pyiceberg.typedef import Record

    t = catalog().load_table(name)
    field = t.schema().find_field(column)
    arrow_schema = schema_to_pyarrow(Schema(field))
    data = pa.Table.from_pylist([{column: int(v)} for v in values], schema=arrow_schema)
    path = f"{t.location()}/data/eq-delete-{uuid.uuid4()}.parquet"
    with t.io.new_output(path).create() as out:
        pq.write_table(data, out)
    size = len(t.io.new_input(path).open().read())
    delete_file = DataFile.from_args(
        content=DataFileContent.EQUALITY_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=len(values),
        file_size_in_bytes=size,
        equality_ids=[field.field_id],
        spec_id=t.spec().spec_id,
    )

    class DeleteManifestWriter(ManifestWriterV2):
        def content(self):
            return ManifestContent.DELETES

        @property
        def _meta(self):
            return {**super()._meta, "content": "deletes"}

    with t.transaction() as tx:
        with tx.update_snapshot().fast_append() as append:
            def writer(spec, append=append):
                return DeleteManifestWriter(
                    spec, append.schema(), append.new_manifest_output(), append._snapshot_id, append._compression
                )

            append.new_manifest_writer = writer
            # a snapshot that only adds deletes is a "delete" (Java's RowDelta)
            append._operation = Operation.DELETE
            append.append_data_file(delete_file)
    t = catalog().load_table(name)
    print(t.current_snapshot().snapshot_id)


def duckrest(*statements):
    props = json.loads(os.environ["ICEBERG_CATALOG"])
    # the REST calls and S3 go through httpfs
    con = duck_connection("httpfs", "avro", "iceberg")
    client_id, client_secret = props["credential"].split(":", 1)
    con.execute(
        "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL false, REGION ?)",
        [props["s3.access-key-id"], props["s3.secret-access-key"], props["s3.endpoint"].removeprefix("http://"), props["s3.region"]],
    )
    con.execute(
        "CREATE SECRET ice (TYPE iceberg, CLIENT_ID ?, CLIENT_SECRET ?, OAUTH2_SERVER_URI ?)",
        [client_id, client_secret, props["uri"] + "/v1/oauth/tokens"],
    )
    warehouse = props["warehouse"].removeprefix("s3://")
    con.execute(f"ATTACH '{warehouse}' AS cat (TYPE iceberg, ENDPOINT '{props['uri']}', SECRET ice)")
    rows = []
    for statement in statements:
        rows = con.execute(statement).fetchall()
    print(json.dumps(rows, default=str))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"read": read, "duck": duck, "write": write, "delete": delete, "eqdelete": eqdelete, "duckrest": duckrest}[cmd](*args)
    sys.stdout.flush()
    # pyarrow's and DuckDB's threads can hang interpreter shutdown
    os._exit(0)


if __name__ == "__main__":
    main()
