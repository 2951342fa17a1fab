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
/// `too_many_pings` after the third (measured here with a 300 ms interval: GOAWAY after PING 3).
///
/// Pure state, the session's one keepalive timer included: the session handler feeds it events and the time
/// and does what it answers (arm the timer, send a PING, drop the connection).
struct KeepaliveState {
    enum Action: Equatable {
        case none
        /// Cancel the armed timer, if any, and arm it for this instant.
        case arm(ContinuousClock.Instant)
        /// Send a PING; then arm the timer for the instant given, if any (else the armed one is due earlier).
        case sendPing(arm: ContinuousClock.Instant?)
        /// No answer to the PING in time: drop the connection.
        case declareDead
    }

    let interval: Duration
    let timeout: Duration
    private(set) var lastRead: ContinuousClock.Instant
    /// When the PING still waiting for an answer went out.
    private(set) var pingSentAt: ContinuousClock.Instant?
    /// When the timer the driver armed fires (nil: none armed).
    private(set) var timerAt: ContinuousClock.Instant?

    init(interval: Duration, timeout: Duration, now: ContinuousClock.Instant) {
        self.interval = interval
        self.timeout = timeout
        lastRead = now
    }

    var awaitingAnswer: Bool { pingSentAt != nil }

    /// The session is up: arm the first check.
    mutating func started(now: ContinuousClock.Instant) -> Action {
        timerAt = nil
        return arm(now: now).map { .arm($0) } ?? .none
    }

    /// Bytes arrived. While a PING waits for its answer the timer waits for that answer's deadline: it moves to
    /// the next regular check. Otherwise nothing to do (the armed check finds the later read and re-arms).
    mutating func bytesRead(now: ContinuousClock.Instant) -> Action {
        lastRead = now
        guard pingSentAt != nil else { return .none }
        pingSentAt = nil
        timerAt = nil
        return arm(now: now).map { .arm($0) } ?? .none
    }

    /// The armed timer fired.
    mutating func timerFired(now: ContinuousClock.Instant, callsInFlight: Bool) -> Action {
        timerAt = nil
        if let sent = pingSentAt {
            if now - sent >= timeout { return .declareDead }
            return arm(now: now).map { .arm($0) } ?? .none
        }
        guard callsInFlight, now - lastRead >= interval else { return arm(now: now).map { .arm($0) } ?? .none }
        pingSentAt = now
        return .sendPing(arm: arm(now: now))
    }

    /// A call sent at `sentAt` passed its deadline.
    mutating func callExpired(sentAt: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Action {
        guard pingSentAt == nil, lastRead < sentAt else { return .none }
        pingSentAt = now
        return .sendPing(arm: arm(now: now))
    }

    /// When the timer has something to do next, unless a read comes first: the answer's deadline, else
    /// `interval` after the last read (or after now, when that has passed: nothing to do until calls run).
    func nextCheck(now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        if let sent = pingSentAt { return sent + timeout }
        let due = lastRead + interval
        return due > now ? due : now + interval
    }

    /// The instant to arm the timer for, unless it is armed for that or earlier already.
    private mutating func arm(now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let due = nextCheck(now: now)
        if let timerAt, timerAt <= due { return nil }
        timerAt = due
        return due
    }
}
