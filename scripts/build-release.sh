#!/usr/bin/env bash
# Release builds of the executables (each directory under Services/ is one product of Package.swift).
# Product by product rather than `swift build -c release`, which would also build the test-support and fuzz
# libraries: those `@testable import` the gateway modules, which only a debug (testing) build allows.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in Services/*/; do
  swift build -c release --product "$(basename "$dir")" "$@"
done
