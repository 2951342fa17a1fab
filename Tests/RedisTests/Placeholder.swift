// tests for RedisTests
