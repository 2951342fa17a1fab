// Kafka integration tests: see the other files.
