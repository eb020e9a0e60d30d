#!/usr/bin/env bash
# The whole test suite, for every crate of the workspace (the product at the root and
# crates/binsync-receiver): formatting, lints, and every test target. The integration tests start
# their own throwaway MariaDB and nats-server processes (tests/common), so this installs MariaDB
# and nats-server on a fresh Debian machine that lacks them. Exits non-zero if any step fails.
#
# Environment:
#   BINSYNC_TEST_THREADS   tests run at once (default: one per core)
#   BINSYNC_TEST_TIMEOUT   with cargo-nextest: kill a test still running after this many
#                          minutes (default 10)
#   BINSYNC_NO_NEXTEST=1   use `cargo test` even when cargo-nextest is installed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# --- MariaDB for tests/common (mariadbd, mariadb-install-db, the mariadb client) ------------------
have_mariadb() {
    { [[ -n "${BINSYNC_MARIADBD:-}" ]] || command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]]; } &&
        { [[ -n "${BINSYNC_MARIADB_INSTALL_DB:-}" ]] || command -v mariadb-install-db >/dev/null; } &&
        command -v mariadb >/dev/null
}
if ! have_mariadb; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        step "installing MariaDB (apt-get install mariadb-server mariadb-client)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends mariadb-server mariadb-client
        have_mariadb || die "MariaDB is still missing after apt-get install"
    else
        die "the tests need MariaDB's mariadbd, mariadb-install-db and mariadb client; install the \
packages mariadb-server and mariadb-client (or set BINSYNC_MARIADBD and BINSYNC_MARIADB_INSTALL_DB)"
    fi
fi
mariadbd_bin=${BINSYNC_MARIADBD:-$(command -v mariadbd || echo /usr/sbin/mariadbd)}
echo "MariaDB: $("$mariadbd_bin" --version)"

# --- nats-server for tests/common/nats.rs (JetStream) -------------------------------------------
have_nats() {
    [[ -n "${BINSYNC_NATS_SERVER:-}" ]] || command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]]
}
if ! have_nats; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        step "installing nats-server (apt-get install nats-server)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends nats-server
        have_nats || die "nats-server is still missing after apt-get install"
    else
        die "the JetStream tests need nats-server (with JetStream); install the package nats-server \
(or set BINSYNC_NATS_SERVER)"
    fi
fi
nats_bin=${BINSYNC_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
echo "nats-server: $("$nats_bin" --version)"

# --- Rust toolchain components ------------------------------------------------------------------
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "installing $component"
        rustup component add "$component" || die "cargo ${component/rustfmt/fmt} is missing"
    fi
done
cargo --version

# --- Checks ---------------------------------------------------------------------------------------
step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The fuzz targets (fuzz/, outside the workspace) against today's API: a plain check on stable
# (cargo fuzz's own build needs nightly flags, see scripts/fuzz.sh). About 2 minutes cold, a
# second after. --locked: fuzz/Cargo.lock must follow the root's dependencies.
step "cargo check --locked --manifest-path fuzz/Cargo.toml"
cargo check --locked --manifest-path fuzz/Cargo.toml

step "cargo test --workspace --doc"
cargo test --workspace --doc

# The opt-in Docker scenario (tests/docker.rs, MySQL 8.4 and MariaDB 11 containers) cannot run
# here (no Docker engine), but it must keep compiling.
step "cargo test --features docker-tests --test docker --no-run"
cargo test --features docker-tests --test docker --no-run

# Tests last, so that the test runner's summary closes the output.
threads=${BINSYNC_TEST_THREADS:-}
if [[ -z "${BINSYNC_NO_NEXTEST:-}" ]] && cargo nextest --version >/dev/null 2>&1; then
    # A per-test time limit from a tool config: the repo's own .config/nextest.toml, if it gets
    # one, still wins. A killed test process takes its servers with it (PR_SET_PDEATHSIG).
    nextest_config=$(mktemp --suffix=.toml)
    trap 'rm -f "$nextest_config"' EXIT
    cat >"$nextest_config" <<EOF
[profile.default]
slow-timeout = { period = "60s", terminate-after = ${BINSYNC_TEST_TIMEOUT:-10} }
fail-fast = false
EOF
    step "cargo nextest run --workspace --all-targets"
    cargo nextest run --workspace --all-targets --no-fail-fast \
        --tool-config-file "binsync-test-sh:$nextest_config" \
        ${threads:+--test-threads "$threads"}
else
    step "cargo test --workspace --all-targets"
    cargo test --workspace --all-targets --no-fail-fast -- ${threads:+--test-threads "$threads"}
fi
