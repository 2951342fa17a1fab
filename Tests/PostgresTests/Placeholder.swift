// tests for PostgresTests
