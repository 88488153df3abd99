"""Driver of `cargo bench --bench flight` (benches/flight.rs starts the
release `velo server` and runs this): Flight SQL fetch throughput and push
latency, measured from a real client, side by side with a peer.

argv: flight_uri server_pid workdir rows

1. fetch: a `rows`-row Parquet file (id, key BIGINT; v, w DOUBLE) queried
   whole (`SELECT * FROM '<file>'`) through ADBC's Flight SQL driver and
   through pyarrow.flight; MB/s of Arrow data on loopback (wall) and per
   CPU-second of the server;
2. peer: the same file served by a minimal pyarrow.flight server (pyarrow's
   C++ Flight server: read the file, stream it), fetched by pyarrow.flight:
   the cost of Flight itself on this machine;
3. push latency: a generator job subscribed to with `EMIT CHANGES`; for each
   epoch, from the moment the server evaluates the subscriber's query over
   the committed epoch (`now()`, right after the commit) to the client
   holding the batch.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq
from google.protobuf import any_pb2

uri, pid, work, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
TICK = os.sysconf("SC_CLK_TCK")
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))


def cpu(p):
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def statement(sql):
    q = sql.encode()
    n, size = len(q), b""
    while True:
        b = n & 0x7F
        n >>= 7
        size += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    a = any_pb2.Any()
    a.type_url = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    a.value = b"\x0a" + size + q
    return fl.FlightDescriptor.for_command(a.SerializeToString())


def measure(name, fetch, server_pid):
    results = []
    for _ in range(REPEAT):
        c0, t0 = cpu(server_pid), time.perf_counter()
        table = fetch()
        dt, dc = time.perf_counter() - t0, cpu(server_pid) - c0
        assert table.num_rows == rows, table.num_rows
        mb = table.nbytes / 1e6
        results.append((mb / dt, mb / max(dc, 1e-9), dt))
    best = max(results)
    med = statistics.median(r[0] for r in results)
    print(f"{name:<34} {best[0]:>8.0f} MB/s best  {med:>8.0f} MB/s median  "
          f"{best[1]:>8.0f} MB per server CPU-s  ({table.nbytes / 1e6:.0f} MB, {rows} rows, {best[2]:.2f} s)",
          flush=True)
    return best


# the data
path = f"{work}/fetch.parquet"
if not os.path.exists(path):
    n = rows
    pq.write_table(pa.table({
        "id": pa.array(range(n), pa.int64()),
        "key": pa.array([i % 1000 for i in range(n)], pa.int64()),
        "v": pa.array([i * 0.5 for i in range(n)], pa.float64()),
        "w": pa.array([i * 0.25 for i in range(n)], pa.float64()),
    }), path, row_group_size=1 << 20)

sql = f"SELECT * FROM '{path}'"
conn = flight_sql.connect(uri, autocommit=True)
cur = conn.cursor()


def adbc_fetch():
    cur.execute(sql)
    return cur.fetch_arrow_table()


client = fl.FlightClient(uri)


def pyarrow_fetch():
    info = client.get_flight_info(statement(sql))
    return client.do_get(info.endpoints[0].ticket).read_all()


adbc_fetch()  # warm: the file in the page cache
measure("velo, ADBC Flight SQL driver", adbc_fetch, pid)
measure("velo, pyarrow.flight", pyarrow_fetch, pid)

# the peer: pyarrow's own Flight server streaming the same file
peer_port = int(os.environ.get("BENCH_PEER_PORT", "0")) or 50000 + os.getpid() % 10000
peer = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "flight_peer.py"), path, str(peer_port)])
try:
    pc = fl.FlightClient(f"grpc://127.0.0.1:{peer_port}")
    until = time.time() + 30
    while True:
        try:
            pc.wait_for_available(timeout=1)
            break
        except Exception:  # noqa: BLE001
            if time.time() > until:
                raise
    measure("peer: pyarrow.flight server", lambda: pc.do_get(fl.Ticket(b"all")).read_all(), peer.pid)
finally:
    peer.kill()

# push latency
cur.execute("""CREATE STREAM ticks AS SELECT id, key FROM gen INTO nowhere
  WITH ('gen.type' = 'datagen', 'gen.columns' = 'id:sequence(1), key:int(0,9)',
        'gen.rate' = '10000', 'gen.batch_size' = '500', 'batch.timeout' = '50ms',
        'nowhere.type' = 'blackhole')""")
cur.fetchall()
epochs = int(os.environ.get("BENCH_EPOCHS", "200"))
sub = conn.cursor()
sub.execute("SELECT id, now() AS at FROM ticks EMIT CHANGES")
reader = sub.fetch_record_batch()
lat = []
while len(lat) < epochs:
    b = reader.read_next_batch()
    got = time.time_ns()
    if b.num_rows:
        at = b.column(1)[0].value  # ns since the Unix epoch
        lat.append((got - at) / 1e6)
sub.adbc_cancel()
sub.close()
cur.close()
conn.close()
lat.sort()
print(f"push latency, commit -> client  p50 {lat[len(lat) // 2]:.2f} ms  p90 {lat[int(len(lat) * 0.9)]:.2f} ms  "
      f"p99 {lat[int(len(lat) * 0.99)]:.2f} ms  max {lat[-1]:.2f} ms  ({len(lat)} epochs)", flush=True)
print(json.dumps({"done": True}))
