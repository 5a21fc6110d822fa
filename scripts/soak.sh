#!/usr/bin/env bash
# The soak: kill -9 the built queue-server again and again under producers
# and workers, and check every acknowledged enqueue and completion after
# every restart (tests/soak.rs).
#
#   scripts/soak.sh [CYCLES] [MAX_SECONDS]      (defaults: 1000, 3600)
#
# SOAK_PROFILE=release builds and runs the release binary (default: the
# test profile). The run stops starting cycles once MAX_SECONDS are spent,
# still checks everything, and prints how many cycles it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_CYCLES="${1:-${SOAK_CYCLES:-1000}}"
export SOAK_MAX_SECONDS="${2:-${SOAK_MAX_SECONDS:-3600}}"
profile=()
if [ "${SOAK_PROFILE:-}" = "release" ]; then
    profile=(--release)
fi
exec cargo test "${profile[@]}" -p queue-tests --test tests soak::soak_sigkill_cycles \
    -- --ignored --exact --nocapture
