#!/usr/bin/env bash
# Run the whole test suite (slow end-to-end tests included). Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick part only.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ruff check umlmm_pipelines umlmm_pipelines_tests
exec python -m pytest "$@"
