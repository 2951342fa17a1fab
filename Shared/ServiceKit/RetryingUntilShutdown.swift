import ServiceLifecycle
import TECore

/// `retrying` inside a service: a wait ends early at graceful shutdown, and no attempt is retried once
/// shutdown has begun (the last error is rethrown), so a service stuck on an unreachable server still
/// stops within its shutdown budget.
public func retryingUntilShutdown<T>(
    _ policy: RetryPolicy,
    isRetryable: (any Error) -> Bool = { _ in true },
    onRetry: (_ attempt: Int, _ error: any Error, _ delay: Duration) -> Void = { _, _, _ in },
    isolation: isolated (any Actor)? = #isolation,
    operation: () async throws -> T
) async throws -> T {
    try await retrying(
        policy,
        isRetryable: { !Task.isShuttingDownGracefully && isRetryable($0) },
        onRetry: onRetry,
        // Cancellation is not swallowed: `retrying` checks it before the next attempt.
        sleep: { delay in try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) } },
        operation: operation)
}
