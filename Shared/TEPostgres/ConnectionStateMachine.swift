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

    struct Backoff: Sendable, Equatable {
        /// Delay before the first retry. Default: 100 ms.
        var initialNanos: UInt64 = 100_000_000
        /// Upper bound of the delay. Default: 5 s.
        var maximumNanos: UInt64 = 5_000_000_000

        /// initial × 2^(failures−1), capped.
        func delay(afterFailures failures: Int) -> UInt64 {
            guard failures > 0 else { return 0 }
            let shift = min(failures - 1, 32)
            let (value, overflow) = initialNanos.multipliedReportingOverflow(by: 1 << UInt64(shift))
            return overflow ? maximumNanos : min(value, maximumNanos)
        }
    }

    private(set) var state: State = .initial
    private var lastGeneration: UInt64 = 0
    let backoff: Backoff

    init(backoff: Backoff = Backoff()) {
        self.backoff = backoff
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

    /// A (re)connection attempt failed at `now`: the next one waits longer.
    mutating func connectFailed(now: UInt64) {
        switch state {
        case .broken(let failures, _):
            state = .broken(failures: failures + 1, retryAt: now + backoff.delay(afterFailures: failures + 1))
        case .initial, .connected:
            state = .broken(failures: 1, retryAt: now + backoff.delay(afterFailures: 1))
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
