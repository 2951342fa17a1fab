/// HTTP/2 PING keepalive of one connection: tells a silent connection (the peer stopped, a half-open path)
/// from a quiet one, so the connection is dropped and the next call reconnects instead of every call running
/// to its deadline on it.
///
/// Anything read shows the peer alive (the PING's ACK is a read too). A PING goes out when nothing was read
/// for `interval`, or at once when a call's deadline passes with nothing read since the call was sent; if
/// nothing is read within `timeout` after it, the connection is dead. Pure state: the session handler feeds
/// it events and the time, and does what it answers.
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

    mutating func bytesRead(now: ContinuousClock.Instant) {
        lastRead = now
        pingSentAt = nil
    }

    /// The periodic check (`nextCheck` says when it is next due).
    mutating func check(now: ContinuousClock.Instant) -> Action {
        if let sent = pingSentAt {
            return now - sent >= timeout ? .declareDead : .none
        }
        guard now - lastRead >= interval else { return .none }
        pingSentAt = now
        return .sendPing
    }

    /// A call sent at `sentAt` passed its deadline.
    mutating func callExpired(sentAt: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Action {
        guard pingSentAt == nil, lastRead < sentAt else { return .none }
        pingSentAt = now
        return .sendPing
    }

    /// When `check` has something to do next, unless a read comes first.
    var nextCheck: ContinuousClock.Instant {
        if let sent = pingSentAt { return sent + timeout }
        return lastRead + interval
    }
}
