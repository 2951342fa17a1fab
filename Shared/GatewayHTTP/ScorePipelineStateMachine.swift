import GatewayEngine
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// The pipelining of one HTTP/1.1 connection as `ScoreFastPathHandler` sees it, without I/O: which request
/// parts the fast path takes and which go on to Hummingbird, when a score request is complete and answered,
/// what is held back meanwhile (later pipelined parts, reads, a client's half-close, the server's quiesce)
/// and when it is let go. The handler performs the actions; swift-nio's `HTTPServerPipelineHandler` is the
/// model.
///
/// Answers leave in request order: the fast path takes a score request only while no request it passed to
/// Hummingbird is unanswered (otherwise Hummingbird's `/v1/score` route answers it, with the same code),
/// and while its own answer is pending nothing more is read: parts already decoded wait in `held`, reads
/// wait until the answer is written, and so do reads while the channel is not writable (a client that
/// pipelines without reading its answers stops being read).
struct ScorePipelineStateMachine {
    enum Phase {
        case idle
        /// Reading a score request's body.
        case collecting(HTTPRequest, Body, arrival: ContinuousClock.Instant)
        /// The current request belongs to Hummingbird.
        case forwarding
        /// A score answer is being computed.
        case answering(closeRequested: Bool)
        /// An answer went out with `Connection: close`: the connection is closing.
        case closed
    }

    enum Body {
        case empty
        case bytes(ByteBuffer)
        /// Over `ScoreRequestParser.maxBodyBytes`, declared or found while reading: discarded, answered 400.
        case overLimit
    }

    enum ReadAction {
        case none
        /// Pass the part on to Hummingbird.
        case forward(HTTPRequestPart)
        /// A score request is complete: answer it (`body` nil: over the size limit).
        case answer(HTTPRequest, body: ByteBuffer?, arrival: ContinuousClock.Instant)
        /// The decoder sent what it never sends (a head inside a request): close the connection.
        case close
    }

    enum ReplayStep {
        /// Perform this for the next held part, then ask again.
        case part(ReadAction)
        /// Nothing more to replay now. `readComplete`: parts were replayed (Hummingbird's async channel
        /// takes reads at the read-complete event); `read`: issue the read held back; `inputClosed`: pass
        /// on the client's half-close held back.
        case done(readComplete: Bool, read: Bool, inputClosed: Bool)
    }

    private(set) var phase = Phase.idle
    /// Requests passed to Hummingbird whose response has not been written yet.
    private(set) var forwardedUnanswered = 0
    private var held = CircularBuffer<HTTPRequestPart>()
    private var readPending = false
    private var writable = true
    /// The server is shutting down: the pending answer closes the connection.
    private var quiescing = false
    private var inputClosedHeld = false
    private var replayed = false

    var heldParts: Int { held.count }

    // MARK: inbound

    /// A request part from the decoder. `now` is read only when a score request starts.
    mutating func read(_ part: HTTPRequestPart, now: () -> ContinuousClock.Instant) -> ReadAction {
        switch phase {
        case .answering:
            held.append(part)
            return .none
        case .closed:
            return .none
        case .idle, .collecting, .forwarding:
            return handle(part, now: now)
        }
    }

    private mutating func handle(_ part: HTTPRequestPart, now: () -> ContinuousClock.Instant) -> ReadAction {
        switch (phase, part) {
        case (.idle, .head(let head)):
            guard forwardedUnanswered == 0, head.method == .post, Self.isScorePath(head.path) else {
                forwardedUnanswered += 1
                phase = .forwarding
                return .forward(part)
            }
            let declared = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
            phase = .collecting(head, declared > ScoreRequestParser.maxBodyBytes ? .overLimit : .empty, arrival: now())
            return .none
        case (.collecting(let head, let body, let arrival), .body(var chunk)):
            switch body {
            case .overLimit:
                return .none
            case .empty:
                guard chunk.readableBytes <= ScoreRequestParser.maxBodyBytes else {
                    phase = .collecting(head, .overLimit, arrival: arrival)
                    return .none
                }
                // Copied out of the decoder's buffer, which it reuses for the next bytes.
                var buffer = ByteBufferAllocator().buffer(capacity: Swift.max(256, chunk.readableBytes))
                buffer.writeBuffer(&chunk)
                phase = .collecting(head, .bytes(buffer), arrival: arrival)
            case .bytes(var buffer):
                phase = .idle  // drop the reference so `buffer` is uniquely owned while appending
                if buffer.readableBytes + chunk.readableBytes > ScoreRequestParser.maxBodyBytes {
                    phase = .collecting(head, .overLimit, arrival: arrival)
                } else {
                    buffer.writeBuffer(&chunk)
                    phase = .collecting(head, .bytes(buffer), arrival: arrival)
                }
            }
            return .none
        case (.collecting(let head, let body, let arrival), .end):
            phase = .answering(closeRequested: head.headerFields[.connection]?.lowercased() == "close")
            switch body {
            case .empty: return .answer(head, body: ByteBuffer(), arrival: arrival)
            case .bytes(let buffer): return .answer(head, body: buffer, arrival: arrival)
            case .overLimit: return .answer(head, body: nil, arrival: arrival)
            }
        case (.forwarding, .end):
            phase = .idle
            return .forward(part)
        case (.forwarding, _), (.idle, .body), (.idle, .end):
            // `.idle` with a body/end part cannot come from the HTTP decoder; Hummingbird rejects it.
            return .forward(part)
        case (.collecting, .head):
            phase = .closed
            return .close
        case (.answering, _), (.closed, _):
            preconditionFailure("read(_:) holds or drops parts in these phases")
        }
    }

    static func isScorePath(_ path: String?) -> Bool {
        guard let path else { return false }
        return path == "/v1/score" || path.hasPrefix("/v1/score?")
    }

    /// The channel wants more bytes: true to read now, false when the read waits (an answer is pending,
    /// or the channel is not writable).
    mutating func readRequested() -> Bool {
        switch phase {
        case .answering:
            readPending = true
            return false
        case .idle, .collecting, .forwarding, .closed:
            guard writable else {
                readPending = true
                return false
            }
            return true
        }
    }

    /// The channel's writability changed: true to issue the read that waited for it.
    mutating func writabilityChanged(isWritable: Bool) -> Bool {
        writable = isWritable
        guard isWritable, readPending else { return false }
        switch phase {
        case .answering: return false
        case .idle, .collecting, .forwarding, .closed:
            readPending = false
            return true
        }
    }

    /// `ChannelShouldQuiesceEvent`: true to pass it on to Hummingbird; false while a score request is read
    /// or answered (Hummingbird, which never sees it, would close the connection under it): that answer
    /// then goes out with `Connection: close`.
    mutating func quiesce() -> Bool {
        switch phase {
        case .collecting, .answering:
            quiescing = true
            return false
        case .idle, .forwarding, .closed:
            return true
        }
    }

    /// The client closed its side (`ChannelEvent.inputClosed`): true to pass it on now; false while a score
    /// answer is pending or parts wait to be replayed (Hummingbird would end the connection on it before
    /// they are answered). `ReplayStep.done` lets it go.
    mutating func inputClosed() -> Bool {
        switch phase {
        case .answering:
            inputClosedHeld = true
            return false
        case .idle, .collecting, .forwarding, .closed:
            return true
        }
    }

    // MARK: outbound

    /// Hummingbird wrote the end of a response.
    mutating func forwardedResponseEnded() {
        forwardedUnanswered -= 1
    }

    /// The score answer is ready: true to close the connection after it (the client asked, or the server
    /// is shutting down). Then replay with `replayNext`.
    mutating func answerReady() -> Bool {
        guard case .answering(let closeRequested) = phase else {
            preconditionFailure("an answer without a score request in flight: \(phase)")
        }
        if closeRequested || quiescing {
            phase = .closed
            held.removeAll()
            inputClosedHeld = false
            return true
        }
        phase = .idle
        return false
    }

    /// After an answer: the next held part to handle, until `.done`.
    mutating func replayNext(now: () -> ContinuousClock.Instant) -> ReplayStep {
        switch phase {
        case .answering, .closed:
            // The next answer replays the rest.
            defer { replayed = false }
            return .done(readComplete: replayed, read: false, inputClosed: false)
        case .idle, .collecting, .forwarding:
            if let part = held.popFirst() {
                replayed = true
                return .part(handle(part, now: now))
            }
            defer { replayed = false }
            let read = readPending && writable
            if read { readPending = false }
            let inputClosed = inputClosedHeld
            inputClosedHeld = false
            return .done(readComplete: replayed, read: read, inputClosed: inputClosed)
        }
    }
}
