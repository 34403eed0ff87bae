#!/usr/bin/env bash
# Every Sluice check and test, from a fresh machine: installs what it needs
# (cached under ~/.cache/sluice-tools), then fmt, clippy, doc and all tests,
# including the Kafka runs against a real Kafka-protocol broker (tansu).
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
mkdir -p "$tools"
step() { printf '\n==> %s\n' "$*"; }

step "system packages"
# rdkafka links the system OpenSSL (TLS and SASL to Kafka).
if ! pkg-config --exists openssl 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config
fi

step "Kafka-protocol broker (tansu 0.6, cached)"
tansu="$tools/tansu/bin/tansu"
if [ ! -x "$tansu" ]; then
  # Its default build has no storage engine; sqlite keeps data across restarts.
  cargo install tansu --version 0.6.0 --locked --features libsql,dynostore --root "$tools/tansu"
fi
export SLUICE_TANSU="$tansu" SLUICE_REQUIRE_KAFKA=1

step "Python tools: DuckDB (archive interop) and moto's S3 server (cached)"
py="$tools/py"
if ! "$py/bin/python" -c "import duckdb, moto" 2>/dev/null; then
  if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  fi
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check "duckdb==2.0.0" "moto[server]==5.2.1"
fi
export SLUICE_PYTHON="$py/bin/python" SLUICE_MOTO="$py/bin/moto_server" SLUICE_REQUIRE_S3=1 SLUICE_REQUIRE_DUCKDB=1

# The golden SQL tests build their archive from the loghub corpus
# (../shared/corpus/loghub or SLUICE_CORPUS): fail rather than skip without it.
export SLUICE_REQUIRE_CORPUS=1

step "test runner"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked --root "$tools/nextest"
  export PATH="$tools/nextest/bin:$PATH"
fi

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "doc tests"
cargo test --workspace --doc --locked

step "tests"
# Last, so its summary is the run's closing line.
cargo nextest run --workspace --locked --profile ci
