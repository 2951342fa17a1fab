// tests for FeatureTests
