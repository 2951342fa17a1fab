import TECore
import Testing

@testable import TritonClient

/// A Triton connection's lifecycle without a socket: connects, waiting calls, lost sessions, backoff, close.
@Suite struct ConnectionStateMachineTests {
    final class Session {}
    let t0 = ContinuousClock.now
    let backoff = RetryPolicy(initial: .milliseconds(100), maximum: .milliseconds(350), jitter: 0.2)

    @Test func theFirstCallConnectsAndTheOthersWaitForIt() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        #expect(m.callStarted(now: t0) == .waitAndConnect)
        #expect(m.callStarted(now: t0) == .wait, "one connect at a time")
        let session = Session()
        #expect(m.sessionReady(session) == true)
        #expect(m.callStarted(now: t0) == .submit(session))
        #expect(m.sessionReady(Session()) == false, "a second session is not wanted")
    }

    @Test func aFailedConnectFailsCallsUntilTheBackoffPassesThenReconnects() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        _ = m.callStarted(now: t0)
        #expect(m.connectFailed(reason: "refused", now: t0, random: 0) == true)
        #expect(m.callStarted(now: t0 + .milliseconds(99)) == .failUnreachable(reason: "refused"))
        #expect(m.callStarted(now: t0 + .milliseconds(100)) == .waitAndConnect)
        // The second failure in a row doubles the wait.
        #expect(m.connectFailed(reason: "refused", now: t0 + .milliseconds(110), random: 0) == true)
        #expect(m.failures == 2)
        #expect(m.callStarted(now: t0 + .milliseconds(309)) == .failUnreachable(reason: "refused"))
        #expect(m.callStarted(now: t0 + .milliseconds(310)) == .waitAndConnect)
        // A connect that succeeds resets it.
        #expect(m.sessionReady(Session()) == true)
        #expect(m.failures == 0)
        #expect(m.unreachable == nil)
    }

    @Test func theBackoffGrowsToTheCapOfItsPolicy() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        var now = t0
        for (failure, wait) in [(1, 100), (2, 200), (3, 350), (4, 350)] {
            #expect(m.callStarted(now: now) == .waitAndConnect, "attempt \(failure)")
            #expect(m.connectFailed(reason: "refused", now: now, random: 0) == true)
            #expect(m.unreachable?.until == now + .milliseconds(wait), "after \(failure) failures")
            now = now + .milliseconds(wait)
        }
        // The jitter takes up to 20 % off (the policy's own tests cover the draw).
        #expect(m.callStarted(now: now) == .waitAndConnect)
        #expect(m.connectFailed(reason: "refused", now: now, random: 0.999) == true)
        #expect(m.unreachable!.until < now + .milliseconds(350))
        #expect(m.unreachable!.until >= now + .milliseconds(280))
    }

    @Test func aLostSessionReconnectsAtOnce() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        _ = m.callStarted(now: t0)
        let session = Session()
        _ = m.sessionReady(session)
        #expect(m.sessionEnded(Session()) == false, "not the current session")
        #expect(m.sessionEnded(session) == true)
        #expect(m.callStarted(now: t0) == .waitAndConnect, "a lost connection is not a failed connect")
    }

    @Test func closeEndsEverything() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        _ = m.callStarted(now: t0)
        #expect(m.close().isEmpty, "no session yet")
        #expect(m.connectFailed(reason: "late", now: t0, random: 0) == false, "the connect ended after the close")
        #expect(m.sessionReady(Session()) == false, "the driver closes that channel")
        #expect(m.callStarted(now: t0) == .failClosed)

        var ready = ConnectionStateMachine<Session>(backoff: backoff)
        _ = ready.callStarted(now: t0)
        let session = Session()
        _ = ready.sessionReady(session)
        #expect(ready.close().map(ObjectIdentifier.init) == [ObjectIdentifier(session)])
        #expect(ready.isClosed)
    }

    @Test func aSessionGoingAwayDrainsWhileTheNextCallConnectsAnew() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        _ = m.callStarted(now: t0)
        let old = Session()
        _ = m.sessionReady(old)
        #expect(m.sessionGoingAway(Session()) == false, "not the current session")
        #expect(m.sessionGoingAway(old) == true)
        #expect(m.sessionGoingAway(old) == false, "already going away")
        #expect(m.callStarted(now: t0) == .waitAndConnect, "new calls do not go to a session going away")
        #expect(m.failures == 0, "going away is not a failed connect")
        let new = Session()
        #expect(m.sessionReady(new) == true)
        #expect(m.callStarted(now: t0) == .submit(new))
        // Deadlines and cancels still reach the calls finishing on the old one.
        #expect(m.sessions.map(ObjectIdentifier.init) == [ObjectIdentifier(new), ObjectIdentifier(old)])
        #expect(m.sessionEnded(old) == false, "its end is not the current session's")
        #expect(m.sessions.map(ObjectIdentifier.init) == [ObjectIdentifier(new)])
        #expect(m.callStarted(now: t0) == .submit(new))
    }

    @Test func closeClosesTheSessionsStillDraining() {
        var m = ConnectionStateMachine<Session>(backoff: backoff)
        _ = m.callStarted(now: t0)
        let old = Session()
        _ = m.sessionReady(old)
        _ = m.sessionGoingAway(old)
        #expect(m.close().map(ObjectIdentifier.init) == [ObjectIdentifier(old)], "no current session, one draining")
        #expect(m.sessions.isEmpty)
        #expect(m.sessionGoingAway(old) == false)
        #expect(m.callStarted(now: t0) == .failClosed)
    }
}
