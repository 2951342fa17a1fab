import Synchronization

/// A result handed over once, from whoever finishes first to the one task that waits: the first
/// `finish` wins, later ones are ignored; `wait` returns it, at once if it is already there.
public final class OneShot<Value: Sendable, Failure: Error>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Result<Value, Failure>, Never>)
        case done(Result<Value, Failure>)
        case consumed
    }

    private let state = Mutex(State.empty)

    public init() {}

    /// Whether a result was handed over (waited for or not).
    public var isFinished: Bool {
        state.withLock {
            switch $0 {
            case .done, .consumed: true
            case .empty, .waiting: false
            }
        }
    }

    public func finish(_ result: Result<Value, Failure>) {
        let continuation: CheckedContinuation<Result<Value, Failure>, Never>? = state.withLock { s in
            switch s {
            case .empty:
                s = .done(result)
                return nil
            case .waiting(let c):
                s = .consumed
                return c
            case .done, .consumed:
                return nil
            }
        }
        continuation?.resume(returning: result)
    }

    /// The result; a second `wait` is a programming error. With `cancelled`, the waiting task's
    /// cancellation finishes the slot with that failure (whoever finishes later is ignored).
    public func wait(cancelled: Failure? = nil) async throws(Failure) -> Value {
        // Already finished: no continuation, no suspension.
        let ready: Result<Value, Failure>? = state.withLock { s in
            guard case .done(let r) = s else { return nil }
            s = .consumed
            return r
        }
        if let ready { return try ready.get() }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Result<Value, Failure>, Never>) in
                let ready: Result<Value, Failure>? = state.withLock { s in
                    switch s {
                    case .empty:
                        s = .waiting(c)
                        return nil
                    case .done(let r):
                        s = .consumed
                        return r
                    case .waiting, .consumed:
                        preconditionFailure("OneShot waited twice")
                    }
                }
                if let ready { c.resume(returning: ready) }
            }
        } onCancel: {
            if let cancelled { finish(.failure(cancelled)) }
        }
        return try result.get()
    }
}

extension OneShot where Failure == Never {
    public func finish(_ value: Value) {
        finish(.success(value))
    }

    public func wait() async -> Value {
        await wait(cancelled: nil)
    }
}
