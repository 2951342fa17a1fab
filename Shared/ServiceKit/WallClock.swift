import Foundation

/// Wall-clock nanoseconds since the epoch (CLOCK_REALTIME): the `ts_ns` of audit records and rollout events.
@inline(__always) public func wallClockNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
