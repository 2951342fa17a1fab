import TECore

/// The connection's lifecycle as a value: events in, actions out, no I/O, so every transition is
/// unit-tested without a server (the postgres-nio `ConnectionStateMachine` idea, reduced to what a
/// blocking libpq connection needs: connect, reconnect with backoff, sessions, close).
///
/// A *session* is one successful (re)connection, numbered by `generation`. A transaction pins the
/// session it began on: if the connection is lost and re-established meanwhile, the transaction's
/// later statements must fail instead of silently running outside it.
struct ConnectionStateMachine: Sendable {
    enum State: Sendable, Equatable {
        /// Never connected.
        case initial
        case connected(generation: UInt64)
        /// Connecting failed or the connection was lost; the next attempt is allowed at `retryAt`.
        case broken(failures: Int, retryAt: UInt64)
        case closed
    }

    enum OperationAction: Sendable, Equatable {
        /// Run the operation on the current session.
        case run(generation: UInt64)
        /// Wait `delayNanos`, (re)connect (`PQconnectdbParams`, or `PQreset` when a PGconn exists), then run.
        case connect(delayNanos: UInt64)
        /// The operation belongs to a session that no longer exists.
        case failSessionLost
        case failClosed
    }

    enum CloseAction: Sendable, Equatable {
        case finish
        case nothing
    }

    /// The wait before each reconnect while attempts fail. Default: 100 ms doubling to 5 s, jitter 0.5.
    static let defaultReconnect = RetryPolicy(initial: .milliseconds(100), maximum: .seconds(5))

    private(set) var state: State = .initial
    private var lastGeneration: UInt64 = 0
    let reconnect: RetryPolicy

    init(reconnect: RetryPolicy = Self.defaultReconnect) {
        self.reconnect = reconnect
    }

    /// An operation wants to run at `now`; `session` is the generation a transaction is pinned to.
    mutating func operationRequested(now: UInt64, session: UInt64?) -> OperationAction {
        switch state {
        case .initial:
            if session != nil { return .failSessionLost }
            return .connect(delayNanos: 0)
        case .connected(let generation):
            if let session, session != generation { return .failSessionLost }
            return .run(generation: generation)
        case .broken(_, let retryAt):
            if session != nil { return .failSessionLost }
            return .connect(delayNanos: retryAt > now ? retryAt - now : 0)
        case .closed:
            return .failClosed
        }
    }

    /// A (re)connection succeeded; returns the new session's generation.
    mutating func connectSucceeded() -> UInt64 {
        lastGeneration += 1
        state = .connected(generation: lastGeneration)
        return lastGeneration
    }

    /// A (re)connection attempt failed at `now`: the next one waits longer. `jitter` is the driver's
    /// random draw in 0..<1 (`RetryPolicy.delay(attempt:fraction:)`), an input so the machine stays pure.
    mutating func connectFailed(now: UInt64, jitter: Double) {
        switch state {
        case .broken(let failures, _):
            state = .broken(failures: failures + 1, retryAt: now + delayNanos(attempt: failures + 1, jitter: jitter))
        case .initial, .connected:
            state = .broken(failures: 1, retryAt: now + delayNanos(attempt: 1, jitter: jitter))
        case .closed:
            break
        }
    }

    /// An operation found the connection dead (PQstatus == CONNECTION_BAD). The first reconnect is
    /// immediate: a server restart is usually over by the time the next batch arrives.
    mutating func connectionLost(now: UInt64) {
        switch state {
        case .connected:
            state = .broken(failures: 0, retryAt: now)
        case .initial, .broken, .closed:
            break
        }
    }

    private func delayNanos(attempt: Int, jitter: Double) -> UInt64 {
        let (seconds, attoseconds) = reconnect.delay(attempt: attempt, fraction: jitter).components
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    mutating func closeRequested() -> CloseAction {
        switch state {
        case .closed:
            return .nothing
        case .initial, .connected, .broken:
            state = .closed
            return .finish
        }
    }
}
