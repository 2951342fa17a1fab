import TECore

/// The lifecycle of one Triton connection, without I/O: idle → connecting → ready(session) → idle (lost, failed
/// or going away) … → closed, and when a call may start a connect. `ConnectionCore` is its driver: it owns the
/// socket, the nghttp2 session, the calls waiting for a connect and the deadline timer, and does what the
/// machine answers. Keepalive is `KeepaliveState`, per session.
///
/// Reconnect backoff: after a failed connect, calls fail at once (`unreachable`) until the policy's delay for
/// the consecutive failures so far has passed, then the next call connects again (jittered, so replicas that
/// lost Triton together do not all come back at the same instant); a connect that succeeds resets it.
///
/// GOAWAY: a session the server is ending (or whose stream IDs ran out) takes no new calls; its calls in flight
/// finish on it (it drains) while the next call connects anew, at once.
struct ConnectionStateMachine<Session: AnyObject> {
    enum State {
        case idle
        case connecting
        case ready(Session)
        case closed
    }

    enum StartAction: Equatable {
        /// Submit the call on the session.
        case submit(Session)
        /// Keep the call until the connect ends.
        case wait
        /// Keep the call and connect.
        case waitAndConnect
        /// Fail the call: the last connect failed and its backoff has not passed.
        case failUnreachable(reason: String)
        /// Fail the call: the client is closed.
        case failClosed

        static func == (a: StartAction, b: StartAction) -> Bool {
            switch (a, b) {
            case (.submit(let x), .submit(let y)): x === y
            case (.wait, .wait), (.waitAndConnect, .waitAndConnect), (.failClosed, .failClosed): true
            case (.failUnreachable(let x), .failUnreachable(let y)): x == y
            case (.submit, _), (.wait, _), (.waitAndConnect, _), (.failUnreachable, _), (.failClosed, _): false
            }
        }
    }

    let backoff: RetryPolicy
    private(set) var state = State.idle
    /// Consecutive failed connects.
    private(set) var failures = 0
    /// Until when calls fail at once, and why.
    private(set) var unreachable: (until: ContinuousClock.Instant, reason: String)?
    /// Sessions going away whose calls in flight still finish on them, until their channel ends.
    private(set) var draining: [Session] = []

    init(backoff: RetryPolicy) { self.backoff = backoff }

    /// A call wants to go out.
    mutating func callStarted(now: ContinuousClock.Instant) -> StartAction {
        switch state {
        case .ready(let session): return .submit(session)
        case .connecting: return .wait
        case .closed: return .failClosed
        case .idle:
            if let unreachable, now < unreachable.until { return .failUnreachable(reason: unreachable.reason) }
            state = .connecting
            return .waitAndConnect
        }
    }

    /// The connect failed (refused, timed out, unresolvable): back to idle; the waiting calls fail.
    /// `random` in [0, 1) picks the backoff's jitter. False when no connect was under way (closed meanwhile).
    mutating func connectFailed(reason: String, now: ContinuousClock.Instant, random: Double) -> Bool {
        switch state {
        case .connecting:
            state = .idle
            failures += 1
            unreachable = (now + backoff.delay(attempt: failures, fraction: random), reason)
            return true
        case .idle, .ready, .closed:
            return false
        }
    }

    /// The session is up (channel active, SETTINGS queued): true to send the waiting calls on it; false
    /// when the connection is no longer wanted (closed meanwhile): the driver closes that channel.
    mutating func sessionReady(_ session: Session) -> Bool {
        switch state {
        case .connecting:
            state = .ready(session)
            failures = 0
            unreachable = nil
            return true
        case .idle, .ready, .closed:
            return false
        }
    }

    /// A session's channel went away (its calls have been failed): true when it was the current one (the
    /// next call reconnects, at once: a lost connection is not a failed connect).
    mutating func sessionEnded(_ session: Session) -> Bool {
        draining.removeAll { $0 === session }
        guard case .ready(let current) = state, current === session else { return false }
        state = .idle
        return true
    }

    /// The server sent GOAWAY on `session` (or its stream IDs ran out): it takes no new calls and drains; true
    /// when it was the current one (the next call connects a new session, at once: not a failed connect).
    mutating func sessionGoingAway(_ session: Session) -> Bool {
        guard case .ready(let current) = state, current === session else { return false }
        state = .idle
        draining.append(session)
        return true
    }

    /// The sessions whose calls are in flight: the current one and those draining (deadlines and cancels reach
    /// calls on all of them).
    var sessions: [Session] {
        if case .ready(let session) = state { return [session] + draining }
        return draining
    }

    /// The client is closing: the sessions to close (the current one and those draining). The driver fails the
    /// waiting calls.
    mutating func close() -> [Session] {
        let open = sessions
        state = .closed
        draining = []
        return open
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    var isConnecting: Bool {
        if case .connecting = state { return true }
        return false
    }
}
