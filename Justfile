# Everyday recipes (https://github.com/casey/just: `cargo install just`).
# Each one is a plain command you can also copy into a shell.

# List the recipes.
default:
    @just --list

# Build the release binary (target/release/proto).
build:
    cargo build --release

# Run every test, as CI does (root runs the link-emulator tests too).
test:
    cargo test

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Criterion benchmarks (codec, in-process echo).
bench:
    cargo bench

# The one-minute tour: an echo server you can talk to with nc.
demo:
    cargo run --release -- serve tcp

# Everything CI runs, on this machine.
ci:
    bash .ci/run
