import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import TritonClient

@Suite struct KeepaliveStateTests {
    let t0 = ContinuousClock.now

    func started(interval: Duration = .seconds(10), timeout: Duration = .seconds(2)) -> KeepaliveState {
        var k = KeepaliveState(interval: interval, timeout: timeout, now: t0)
        #expect(k.started(now: t0) == .arm(t0 + interval), "the first check, one interval on")
        return k
    }

    @Test func busyQuietConnectionIsPingedAndAnAnswerKeepsIt() {
        var k = started()
        // Fired early (timers may): nothing due yet, the timer stays armed for the due instant.
        #expect(k.timerFired(now: t0 + .seconds(9), callsInFlight: true) == .arm(t0 + .seconds(10)))
        #expect(k.timerFired(now: t0 + .seconds(10), callsInFlight: true) == .sendPing(arm: t0 + .seconds(12)))
        #expect(
            k.timerFired(now: t0 + .seconds(11), callsInFlight: true) == .arm(t0 + .seconds(12)), "one PING at a time")
        // The ACK: the timer, armed for the answer's deadline, moves to the next regular check.
        #expect(k.bytesRead(now: t0 + .milliseconds(10_001)) == .arm(t0 + .milliseconds(20_001)))
        #expect(!k.awaitingAnswer)
        #expect(
            k.timerFired(now: t0 + .milliseconds(20_001), callsInFlight: true)
                == .sendPing(arm: t0 + .milliseconds(22_001)))
    }

    @Test func idleConnectionIsNeverPinged() {
        // gRPC servers answer PINGs without calls with GOAWAY too_many_pings after the third.
        var k = started()
        #expect(
            k.timerFired(now: t0 + .seconds(60), callsInFlight: false) == .arm(t0 + .seconds(70)),
            "no busy timer while idle")
        #expect(k.timerFired(now: t0 + .seconds(70), callsInFlight: false) == .arm(t0 + .seconds(80)))
        #expect(!k.awaitingAnswer)
    }

    @Test func unansweredPingDeclaresTheConnectionDead() {
        var k = started()
        #expect(k.timerFired(now: t0 + .seconds(10), callsInFlight: true) == .sendPing(arm: t0 + .seconds(12)))
        #expect(
            k.timerFired(now: t0 + .seconds(12), callsInFlight: false) == .declareDead, "even once the calls are gone")
    }

    @Test func readsPostponeThePingWithoutMovingTheTimer() {
        var k = started()
        #expect(k.bytesRead(now: t0 + .seconds(5)) == .none, "no timer work per read")
        #expect(k.timerFired(now: t0 + .seconds(10), callsInFlight: true) == .arm(t0 + .seconds(15)))
        #expect(k.timerFired(now: t0 + .seconds(15), callsInFlight: true) == .sendPing(arm: t0 + .seconds(17)))
    }

    @Test func expiredCallPingsAtOnceOnlyWhenNothingWasReadSinceItWasSent() {
        var k = started()
        _ = k.bytesRead(now: t0 + .seconds(2))
        // Sent before the last read: the connection answered since, no PING.
        #expect(k.callExpired(sentAt: t0 + .seconds(1), now: t0 + .seconds(3)) == .none)
        // Sent after it and nothing read since: PING now, the timer brought forward to the answer's deadline.
        #expect(
            k.callExpired(sentAt: t0 + .milliseconds(2_500), now: t0 + .seconds(3)) == .sendPing(arm: t0 + .seconds(5)))
        #expect(k.callExpired(sentAt: t0 + .milliseconds(2_600), now: t0 + .seconds(3)) == .none, "one PING at a time")
        #expect(k.timerFired(now: t0 + .seconds(5), callsInFlight: false) == .declareDead)
    }

    @Test func aPingWhoseDeadlineIsAfterTheArmedTimerLeavesTheTimerAlone() {
        var k = started(interval: .seconds(1), timeout: .seconds(5))
        // Armed for t0+1 s; an expiry PING at t0+0.5 s answers by t0+5.5 s: the earlier timer stays and re-arms then.
        #expect(k.callExpired(sentAt: t0 + .milliseconds(100), now: t0 + .milliseconds(500)) == .sendPing(arm: nil))
        #expect(k.timerFired(now: t0 + .seconds(1), callsInFlight: true) == .arm(t0 + .milliseconds(5_500)))
        #expect(k.timerFired(now: t0 + .milliseconds(5_500), callsInFlight: true) == .declareDead)
    }
}

/// A Triton connection that goes silent without closing (the server stopped, a half-open path): through a
/// TCP proxy that stops relaying, the call that runs to its deadline sends a PING, the unanswered PING
/// drops the connection, and once the path relays again the next calls reconnect and are answered. Real
/// Triton behind the proxy.
@Suite(.timeLimit(.minutes(2)))
struct KeepaliveTests {
    @Test func silencedConnectionIsDroppedByThePingTimeoutAndCallsRecover() async throws {
        let upstream = try TritonClientConfiguration(url: try tritonURL())
        let proxy = try await PausableProxy(upstreamHost: upstream.host, upstreamPort: upstream.port)
        defer { proxy.close() }
        var configuration = TritonClientConfiguration(host: "127.0.0.1", port: proxy.port)
        configuration.connections = 1
        configuration.keepaliveInterval = .milliseconds(700)
        configuration.keepaliveTimeout = .seconds(1)
        let client = TritonClient(configuration: configuration)
        defer { client.close() }
        let weights = try ModelWeights.load(version: "1")
        let row = sampleRows(1, seed: 31, weights: weights)
        func infer(within budget: Duration) async throws -> [Float] {
            try await client.infer(model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(budget))
        }
        try expectScores(try await infer(within: .seconds(10)), rows: row, weights: weights)

        // Idle for more than three intervals: no PINGs (Triton answers the third PING on a connection
        // without calls with GOAWAY too_many_pings).
        let pingsBefore = client.connectionStatistics[0].keepalivePings  // one if the first call was slow
        try await Task.sleep(for: .milliseconds(2500))
        #expect(client.connectionStatistics[0].keepalivePings == pingsBefore)

        // Busy but quiet (the test model holds this call for a second): the PING is answered and the
        // connection stays.
        let slow = try await client.infer(
            model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(30)),
            parameters: [("delay_ms", .int64(1000))])
        try expectScores(slow, rows: row, weights: weights)
        #expect(client.connectionStatistics[0].keepalivePings > pingsBefore)
        #expect(client.connectionStatistics[0].keepaliveTimeouts == 0)
        #expect(client.connectionStatistics[0].connectsStarted == 1)

        try await proxy.pause()
        do {
            _ = try await infer(within: .milliseconds(500))
            Issue.record("a call was answered through a silent proxy")
        } catch let error as TritonError {
            #expect(error.code == .deadlineExceeded, "got \(error)")
        }
        #expect(
            await TestEnv.eventually(timeout: .seconds(15)) { client.connectionStatistics[0].keepaliveTimeouts >= 1 },
            "the silent connection was not dropped")

        try await proxy.resume()
        var after: [Float] = []
        let giveUp = ContinuousClock.now + .seconds(30)
        while after.isEmpty && ContinuousClock.now < giveUp {
            do {
                after = try await infer(within: .seconds(2))
            } catch let error as TritonError where [.connection, .deadlineExceeded, .unavailable].contains(error.code) {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try expectScores(after, rows: row, weights: weights)
        #expect(after.count == 1)
        #expect(client.connectionStatistics[0].connectsStarted >= 2, "the answer came over a new connection")
    }
}

/// A TCP proxy on loopback to one upstream that can stop relaying — both directions of every connection,
/// and of connections accepted meanwhile — and start again, leaving the sockets open: bytes wait in the
/// kernel's buffers as behind a stopped peer.
final class PausableProxy: Sendable {
    let port: Int
    private let listener: any Channel
    private let relays: RelaySet

    init(upstreamHost: String, upstreamPort: Int) async throws {
        let relays = RelaySet()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .connect(host: upstreamHost, port: upstreamPort)
                    .flatMapThrowing { outbound in
                        try inbound.pipeline.syncOperations.addHandler(Relay(to: outbound))
                        try outbound.pipeline.syncOperations.addHandler(Relay(to: inbound))
                        if !relays.add([inbound, outbound]) {
                            try inbound.syncOptions?.setOption(.autoRead, value: true)
                            try outbound.syncOptions?.setOption(.autoRead, value: true)
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.listener = listener
        port = listener.localAddress?.port ?? 0
        self.relays = relays
    }

    func pause() async throws {
        for channel in relays.setPaused(true) { try? await channel.setOption(.autoRead, value: false).get() }
    }

    func resume() async throws {
        for channel in relays.setPaused(false) where channel.isActive {
            try? await channel.setOption(.autoRead, value: true).get()
        }
    }

    func close() {
        listener.close(promise: nil)
        for channel in relays.setPaused(false) { channel.close(promise: nil) }
    }
}

private final class RelaySet: Sendable {
    private let state = Mutex<(paused: Bool, channels: [any Channel])>((false, []))

    /// Registers the channels of a new relay; whether relaying is paused.
    func add(_ channels: [any Channel]) -> Bool {
        state.withLock {
            $0.channels.append(contentsOf: channels)
            return $0.paused
        }
    }

    /// Every channel registered so far.
    func setPaused(_ paused: Bool) -> [any Channel] {
        state.withLock {
            $0.paused = paused
            return $0.channels
        }
    }
}

/// Writes what one side reads to the other; closes the other when one closes.
private final class Relay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let partner: any Channel

    init(to partner: any Channel) { self.partner = partner }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
