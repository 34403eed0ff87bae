#!/usr/bin/env bash
# The README's main command: builds sluice and tailll (release) and runs
# `sluice up --demo` with the embedded bus in ./sluice-data. Extra arguments
# go to `sluice up` (e.g. --nodes 3, --bus kafka://HOST:PORT).
set -euo pipefail
cd "$(dirname "$0")/.."

# rdkafka links the system OpenSSL (TLS and SASL to Kafka).
if ! pkg-config --exists openssl 2>/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq libssl-dev pkg-config
fi
cargo build --release --locked -p sluice -p tailll
exec target/release/sluice up --demo "$@"
