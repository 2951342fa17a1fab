# Coverage-guided fuzzing (fuzz/, libFuzzer + AddressSanitizer): each target for FUZZ_SECONDS (default 60);
# a crashing input is kept under fuzz/regressions/<target>/ and replayed by FuzzRegressionTests.
.PHONY: fuzz
fuzz: deps
	@FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) scripts/fuzz.sh
