// tests for GatewayTests
