// tests for TritonTests
