/// HTTP/2 PING keepalive of one connection: tells a silent connection (the peer stopped, a half-open path)
/// from a busy one, so the connection is dropped and the next call reconnects instead of every call running
/// to its deadline on it.
///
/// Anything read shows the peer alive (the PING's ACK is a read too). A PING goes out while calls are in
/// flight and nothing was read for `interval`, or at once when a call's deadline passes with nothing read
/// since the call was sent; if nothing is read within `timeout` after it, the connection is dead.
///
/// No PINGs on an idle connection: gRPC servers (Triton's included) count PINGs on a connection without
/// calls as abuse — by default more than one per 2 hours — and end the session with GOAWAY
/// `too_many_pings` after the third (measured here with a 300 ms interval: GOAWAY after PING 3). Pure
/// state: the session handler feeds it events and the time, and does what it answers.
struct KeepaliveState {
    enum Action: Equatable {
        case none
        case sendPing
        case declareDead
    }

    let interval: Duration
    let timeout: Duration
    private(set) var lastRead: ContinuousClock.Instant
    /// When the PING still waiting for an answer went out.
    private(set) var pingSentAt: ContinuousClock.Instant?

    init(interval: Duration, timeout: Duration, now: ContinuousClock.Instant) {
        self.interval = interval
        self.timeout = timeout
        lastRead = now
    }

    var awaitingAnswer: Bool { pingSentAt != nil }

    mutating func bytesRead(now: ContinuousClock.Instant) {
        lastRead = now
        pingSentAt = nil
    }

    /// The periodic check (`nextCheck` says when it is next due).
    mutating func check(now: ContinuousClock.Instant, callsInFlight: Bool) -> Action {
        if let sent = pingSentAt {
            return now - sent >= timeout ? .declareDead : .none
        }
        guard callsInFlight, now - lastRead >= interval else { return .none }
        pingSentAt = now
        return .sendPing
    }

    /// A call sent at `sentAt` passed its deadline.
    mutating func callExpired(sentAt: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Action {
        guard pingSentAt == nil, lastRead < sentAt else { return .none }
        pingSentAt = now
        return .sendPing
    }

    /// When `check` has something to do next, unless a read comes first: the answer's deadline, else
    /// `interval` after the last read (or after now, when that has passed: nothing to do until calls run).
    func nextCheck(now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        if let sent = pingSentAt { return sent + timeout }
        let due = lastRead + interval
        return due > now ? due : now + interval
    }
}
