"""Drives `velo server`'s Flight SQL endpoint with the real clients (ADBC's
Flight SQL driver and pyarrow.flight) and checks every answer against what
this script computes on its own. Run by tests/it/flight.rs.

argv[1]: JSON {uri, token, user, password, dir, tls_cert (path or null)}.
Prints one JSON report line; exits non-zero on the first failed check.
"""

import json
import os
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq
from adbc_driver_flightsql import DatabaseOptions
from google.protobuf import any_pb2

cfg = json.loads(sys.argv[1])
URI, TOKEN, DIR = cfg["uri"], cfg["token"], cfg["dir"]
TLS = open(cfg["tls_cert"]).read() if cfg.get("tls_cert") else None
report = {}


def check(cond, what):
    if not cond:
        print(json.dumps({"failed": what, "report": report}), flush=True)
        sys.exit(1)


def connect(header=None, user=None):
    kw = {}
    if header is not None:
        kw[DatabaseOptions.AUTHORIZATION_HEADER.value] = header
    if TLS:
        kw[DatabaseOptions.TLS_ROOT_CERTS.value] = TLS
    if user:
        kw["username"], kw["password"] = user
    return flight_sql.connect(URI, db_kwargs=kw, autocommit=True)


def refused(header):
    """The error a call with this authorization header gets."""
    try:
        with connect(header) as c, c.cursor() as cur:
            cur.execute("SHOW JOBS")
            cur.fetchall()
    except Exception as e:  # noqa: BLE001 - any refusal is what is checked
        return str(e)
    return None


def rows(cur, sql, params=None):
    cur.execute(sql, parameters=params)
    return cur.fetch_arrow_table().to_pylist()


def wait(cond, what, limit=60):
    until = time.time() + limit
    while time.time() < until:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")


# 1. credentials: none and wrong refused, a token and a basic user accepted
for name, header in [("missing", None), ("wrong", "Bearer " + "x" * 32)]:
    e = refused(header)
    report[f"{name}_token"] = e
    check(e is not None and "unauthenticated" in e.lower(), f"a {name} token is refused: {e}")
    check(TOKEN not in (e or ""), "the refusal does not echo the token")

conn = connect("Bearer " + TOKEN)
cur = conn.cursor()

# 2. the orders the table job reads, and what it must hold
orders = [{"id": i, "customer": f"c{i % 7}", "amount": float(i % 13) + 0.5} for i in range(1, 501)]
os.makedirs(f"{DIR}/in", exist_ok=True)
with open(f"{DIR}/in/orders.jsonl.part", "w") as f:
    for o in orders:
        f.write(json.dumps(o) + "\n")
os.rename(f"{DIR}/in/orders.jsonl.part", f"{DIR}/in/orders.jsonl")
expected = {}
for o in orders:
    n, s = expected.get(o["customer"], (0, 0.0))
    expected[o["customer"]] = (n + 1, s + o["amount"])

app = f"""-- deployed through ADBC
CREATE TABLE totals AS
SELECT customer, COUNT(*) AS orders, SUM(amount) AS amount
FROM orders GROUP BY customer
INTO out
WITH ('orders.type' = 'file_source', 'orders.path' = '{DIR}/in/orders.jsonl',
      'orders.schema' = 'id BIGINT, customer VARCHAR, amount DOUBLE',
      'out.type' = 'file_sink', 'out.path' = '{DIR}/out/totals.jsonl');
CREATE STREAM ticks AS SELECT id, key FROM gen INTO nowhere
WITH ('gen.type' = 'datagen', 'gen.columns' = 'id:sequence(1), key:int(0,4)',
      'gen.rate' = '2000', 'gen.batch_size' = '100', 'batch.timeout' = '100ms',
      'nowhere.type' = 'blackhole');
"""
deployed = rows(cur, app)
report["deployed"] = deployed
check(sorted(r["name"] for r in deployed) == ["ticks", "totals"], f"both jobs deployed: {deployed}")

# 3. the table, as of its last committed epoch, equals the independent answer
wait(lambda: [r for r in rows(cur, "SHOW JOBS") if r["name"] == "totals" and r["status"] == "Finished"],
     "the table job to finish its bounded input")
table = rows(cur, "SELECT customer, orders, amount FROM totals ORDER BY customer")
report["table_rows"] = len(table)
check(len(table) == len(expected), f"one row per customer: {table}")
for r in table:
    n, s = expected[r["customer"]]
    check(r["orders"] == n and abs(r["amount"] - s) < 1e-9, f"row {r} is {n}, {s}")

# 4. a prepared statement with a bound parameter (ADBC binds through DoPut)
one = rows(cur, "SELECT customer, orders FROM totals WHERE customer = ?", ("c3",))
report["prepared"] = one
check(one == [{"customer": "c3", "orders": expected["c3"][0]}], f"the prepared statement's row: {one}")
two = rows(cur, "SELECT COUNT(*) AS n FROM totals WHERE orders > ? AND customer <> ?", (0, "c0"))
check(two == [{"n": len(expected) - 1}], f"two parameters: {two}")

# 5. ad hoc over bounded files named inline, with DataFusion
os.makedirs(f"{DIR}/lake", exist_ok=True)
for part in range(3):
    pq.write_table(pa.table({"v": list(range(part * 1000, part * 1000 + 1000))}), f"{DIR}/lake/part-{part}.parquet")
for src in [f"{DIR}/lake/*.parquet", f"file://{DIR}/lake/*.parquet"]:
    got = rows(cur, f"SELECT COUNT(*) AS n, SUM(v) AS s FROM '{src}'")
    check(got == [{"n": 3000, "s": sum(range(3000))}], f"the files' count and sum via {src}: {got}")

# 6. a query cannot write, and a stream job is not a table
for bad in [f"COPY (SELECT 1) TO '{DIR}/copied.csv'", "CREATE VIEW v AS SELECT 1", "SET datafusion.execution.batch_size = 1"]:
    try:
        rows(cur, bad)
        check(False, f"'{bad}' was refused")
    except Exception as e:  # noqa: BLE001
        report.setdefault("refused", []).append(str(e)[:120])
check(not os.path.exists(f"{DIR}/copied.csv"), "COPY wrote nothing")
try:
    rows(cur, "SELECT * FROM ticks")
    check(False, "a stream job is refused as a table")
except Exception as e:  # noqa: BLE001
    check("EMIT CHANGES" in str(e), f"the refusal says to subscribe: {e}")

# 6b. hostile statements get errors that say what to do, and nothing breaks
for bad, want in [
    ("", None),
    ("SELEC 1", None),
    ("SELECT * FROM nope EMIT CHANGES", "no job named 'nope'"),
    ("SELECT 1 EMIT CHANGES", "subscribes to one job"),
    ("SELECT * FROM totals t JOIN ticks k ON t.orders = k.id EMIT CHANGES", "subscribes to one job"),
    ("STOP JOB", "name the job"),
    ("SHOW STATUS nope", "no job named 'nope'"),
    ("CREATE STREAM broken AS SELECT FROM", None),
    ("SELECT * FROM '/definitely/not/here/*.parquet'", None),
    ("SELECT ? + 1", None),
]:
    try:
        rows(cur, bad)
        check(False, f"'{bad}' is refused")
    except Exception as e:  # noqa: BLE001
        check(want is None or want in str(e), f"'{bad}': {e}")
        check("panicked" not in str(e), f"'{bad}' does not crash: {e}")
check(len(rows(cur, "SHOW JOBS")) == 2, "the server goes on")

# 7. a subscription: committed epochs of the stream job, through the query
t0 = time.time()
live = rows(cur, "SELECT id, key FROM ticks WHERE key = 3 EMIT CHANGES LIMIT 40")
report["subscribed_rows"] = len(live)
report["subscribed_seconds"] = round(time.time() - t0, 3)
check(len(live) == 40 and all(r["key"] == 3 for r in live), f"40 rows of key 3: {live[:5]}")
ids = [r["id"] for r in live]
check(ids == sorted(ids) and len(set(ids)) == 40, f"in order, no duplicate: {ids}")

# 8. a subscription cancelled by the client: the server lets go of it
status = lambda: rows(cur, "SHOW STATUS ticks")[0]  # noqa: E731
sub = conn.cursor()
sub.execute("SELECT id FROM ticks EMIT CHANGES")
reader = sub.fetch_record_batch()
first = reader.read_next_batch()
check(first.num_rows > 0, "the open subscription streams")
check(status()["subscribers"] >= 1, "the server counts the subscriber")
sub.adbc_cancel()
sub.close()
wait(lambda: status()["subscribers"] == 0, "the cancelled subscription to be let go")

# 9. metadata that ADBC and JDBC ask for
info = conn.adbc_get_info()
report["vendor"] = info.get("vendor_name")
check(info.get("vendor_name") == "Velostream", f"GetSqlInfo: {info}")
objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
names = sorted(
    t["table_name"]
    for c in objects if c["catalog_name"] == "velo"
    for s in c["catalog_db_schemas"] if s["db_schema_name"] == "jobs"
    for t in s["db_schema_tables"]
)
check(names == ["ticks", "totals"], f"GetTables lists the jobs: {objects}")
schema = conn.adbc_get_table_schema("totals", catalog_filter="velo", db_schema_filter="jobs")
check(schema.names[:3] == ["customer", "orders", "amount"], f"the table's schema: {schema}")
check(sorted(conn.adbc_get_table_types()) == ["STREAM", "TABLE"], "table types")

# 10. pyarrow.flight: basic credentials -> a token, then a DoGet of a ticket
client = fl.FlightClient(URI, tls_root_certs=TLS) if TLS else fl.FlightClient(URI)
auth = client.authenticate_basic_token(cfg["user"], cfg["password"])
check(auth[0] == b"authorization" and auth[1].startswith(b"Bearer "), f"handshake token: {auth}")
opts = fl.FlightCallOptions(headers=[auth])


def command(kind, payload=b""):
    a = any_pb2.Any()
    a.type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{kind}"
    a.value = payload
    return fl.FlightDescriptor.for_command(a.SerializeToString())


def field1(payload):
    """A protobuf message whose field 1 (bytes or string) is `payload`."""
    n, size = len(payload), b""
    while True:
        b = n & 0x7F
        n >>= 7
        size += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return b"\x0a" + size + payload


def statement(sql):
    return command("CommandStatementQuery", field1(sql.encode()))


fi = client.get_flight_info(statement("SELECT customer, orders FROM totals ORDER BY customer"), opts)
got = client.do_get(fi.endpoints[0].ticket, opts).read_all().to_pylist()
check([(r["customer"], r["orders"]) for r in got] == [(k, v[0]) for k, v in sorted(expected.items())], f"DoGet rows: {got}")
try:
    client.do_get(fi.endpoints[0].ticket, opts).read_all()
    check(False, "a ticket is served once")
except (fl.FlightError, pa.ArrowKeyError) as e:
    check("fetched already" in str(e), f"a second DoGet says why: {e}")
xdbc = client.get_flight_info(command("CommandGetXdbcTypeInfo"), opts)
types = client.do_get(xdbc.endpoints[0].ticket, opts).read_all().column("type_name").to_pylist()
check("BIGINT" in types and "VARCHAR" in types, f"GetXdbcTypeInfo: {types}")
# CancelFlightInfo: a pending subscription is cancelled and its ticket gone
pending = client.get_flight_info(statement("SELECT id FROM ticks EMIT CHANGES"), opts)
# (pyarrow's client has no cancel_flight_info: the action, by hand)
results = list(client.do_action(fl.Action("CancelFlightInfo", field1(pending.serialize())), opts))
# CancelFlightInfoResult {status: CANCEL_STATUS_CANCELLED (1)}
check([r.body.to_pybytes() for r in results] == [b"\x08\x01"], f"CancelFlightInfo: {results}")
try:
    client.do_get(pending.endpoints[0].ticket, opts).read_all()
    check(False, "a cancelled ticket is not served")
except (fl.FlightError, pa.ArrowKeyError) as e:
    check("fetched already, cancelled" in str(e), f"a cancelled ticket says why: {e}")
try:
    fl.FlightClient(URI, tls_root_certs=TLS).authenticate_basic_token(cfg["user"], "wrong") if TLS else \
        fl.FlightClient(URI).authenticate_basic_token(cfg["user"], "wrong")
    check(False, "a wrong password is refused")
except fl.FlightUnauthenticatedError:
    pass

# 11. the jobs managed by statements
check(rows(cur, "STOP JOB ticks")[0]["status"] == "Stopped", "STOP JOB")
check(rows(cur, "START JOB ticks")[0]["name"] == "ticks", "START JOB")
wait(lambda: status()["status"] == "Running", "the job to run again")
rows(cur, "DROP JOB ticks PURGE")
check([r["name"] for r in rows(cur, "SHOW JOBS")] == ["totals"], "DROP JOB")
try:
    rows(cur, "SHOW STATUS ticks")
    check(False, "a dropped job is gone")
except Exception as e:  # noqa: BLE001
    check("no job named 'ticks'" in str(e), f"not found says so: {e}")

# 12. a basic user through ADBC (its handshake, then the issued token)
with connect(user=(cfg["user"], cfg["password"])) as c2, c2.cursor() as cur2:
    check(rows(cur2, "SHOW JOBS")[0]["name"] == "totals", "a basic user's connection")

cur.close()
conn.close()
print(json.dumps({"ok": True, "report": report}), flush=True)
