import GatewayEngine
import NIOCore
import NIOPosix

/// Process-wide runtime setup of the gateway binary (not of tests, which share their process).
public enum GatewayRuntime {
    /// Runs Swift Concurrency's global executor on NIO's event loops (the same two threads that serve
    /// HTTP), instead of a separate Dispatch pool. Every request otherwise crosses from an event loop to
    /// a pool thread and back; on a 2-core machine those context switches were the largest single cost
    /// (perf at 32 connections: 36 % of gateway CPU in the kernel, `finish_task_switch` alone 10.6 %).
    /// Safe here because nothing in the gateway blocks inside async code: Redis, Triton and logging
    /// run on threads of their own (COMMON.md rule). Must be called first, on the main thread.
    /// `GATEWAY_EVENT_LOOP_EXECUTOR=false` keeps the default pool.
    @discardableResult
    public static func installEventLoopExecutor(environment: [String: String]) -> Bool {
        if let value = environment["GATEWAY_EVENT_LOOP_EXECUTOR"]?.lowercased(),
            ["0", "false", "no", "off"].contains(value)
        {
            return false
        }
        return NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
