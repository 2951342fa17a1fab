// tests for StrategyTests
