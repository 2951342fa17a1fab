// tests for KafkaTests
