# One formatting for the whole tree: `.swift-format` (4 spaces, 120 columns, existing line breaks kept).
# `make test` runs format-check first, so an unformatted file fails CI in seconds, before the build.
FORMAT_PATHS := Package.swift Shared Services Tests bench/Package.swift bench/Sources fuzz

.PHONY: format format-check
format:
	$(SWIFT) format format --in-place --recursive --parallel $(FORMAT_PATHS)

format-check:
	$(SWIFT) format lint --strict --recursive --parallel $(FORMAT_PATHS)
