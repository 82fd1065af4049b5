#!/usr/bin/env bash
# Prints the lint's figures on its corpus (tests/fixtures/corpus/): how many
# unsafe migrations it flags with the right rule, and how many of the safe
# forms it calls errors. The figures come from the test that asserts them
# (at least 95% caught, no false alarm), so they cannot drift apart.
#
#   zdd-migrate/corpus.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet -p zdd-migrate --test corpus catch_rate_and_false_alarms -- --nocapture 2>&1 \
    | grep -E '^(corpus:|  )' || { echo "corpus.sh: the corpus test failed" >&2; exit 1; }
