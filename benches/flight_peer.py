"""The peer of benches/flight_fetch.py: pyarrow's Flight server (C++)
streaming a Parquet file read whole at each DoGet, as a minimal Flight
server would. argv: file port."""

import sys

import pyarrow.flight as fl
import pyarrow.parquet as pq


class Peer(fl.FlightServerBase):
    def __init__(self, path, port):
        super().__init__(f"grpc://127.0.0.1:{port}")
        self.path = path

    def do_get(self, context, ticket):
        table = pq.read_table(self.path)
        return fl.RecordBatchStream(table)


Peer(sys.argv[1], int(sys.argv[2])).serve()
