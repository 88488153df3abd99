"""Velostream from Python over Arrow Flight SQL, with ADBC.

    velo server                                  # Flight SQL on 127.0.0.1:50051
    pip install adbc-driver-flightsql pyarrow
    python examples/python/flight_sql.py

VELO_FLIGHT overrides the address (grpc+tls://... for TLS) and VELO_TOKEN
sends a bearer token when the server has `server.auth` configured.
"""

import os
import time

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri = os.environ.get("VELO_FLIGHT", "grpc://127.0.0.1:50051")
options = {}
if os.environ.get("VELO_TOKEN"):
    options[DatabaseOptions.AUTHORIZATION_HEADER.value] = "Bearer " + os.environ["VELO_TOKEN"]

with flight_sql.connect(uri, db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
    # 1. Deploy an application: orders from the built-in generator, counted
    #    per status. A CREATE TABLE keeps its latest row per key.
    cur.execute("""
        CREATE TABLE orders_by_status AS
        SELECT status, COUNT(*) AS orders, ROUND(SUM(amount), 2) AS amount
        FROM orders
        GROUP BY status
        INTO nowhere
        WITH ('orders.type' = 'datagen',
              'orders.columns' = 'id:sequence(1), amount:float(1,500), status:oneof(NEW|PAID|SHIPPED|CANCELLED)',
              'orders.rate' = '2000',
              'batch.timeout' = '200ms',
              'nowhere.type' = 'blackhole')
    """)
    for job in cur.fetchall():
        print("deployed:", job[0], job[2])

    # 2. Query the table as of its last committed epoch, like any table.
    while True:
        cur.execute("SHOW STATUS orders_by_status")
        if cur.fetch_arrow_table().column("epochs")[0].as_py() > 0:
            break
        time.sleep(0.2)
    cur.execute("SELECT status, orders, amount FROM orders_by_status ORDER BY status")
    for row in cur.fetch_arrow_table().to_pylist():
        print("table:", row)

    # 3. Subscribe: each committed change, as it commits (`_op` says what it is).
    cur.execute("SELECT status, orders, _op FROM orders_by_status EMIT CHANGES LIMIT 20")
    live = cur.fetch_arrow_table()
    print("live rows:", live.num_rows, "e.g.", live.slice(0, 3).to_pylist())

    # 4. Drop the job and its state.
    cur.execute("DROP JOB orders_by_status PURGE")
    print("dropped:", cur.fetchall()[0][0])
