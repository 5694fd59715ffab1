#!/usr/bin/env bash
# Run the whole test suite (slow end-to-end tests included). Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick part only.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check umlmm_pipelines umlmm_pipelines_tests
# Two workers, one test module each at a time (module-scoped Dagster stacks stay in one worker):
# the end-to-end modules mostly wait on daemons and schedule ticks, which the other worker fills.
# UMLMM_TEST_WORKERS=0 runs everything in this process.
exec python -m pytest -n "${UMLMM_TEST_WORKERS:-2}" --dist loadfile "$@"
