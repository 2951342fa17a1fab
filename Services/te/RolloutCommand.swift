import ArgumentParser
import Foundation
import ServiceKit
import TEModels
import TERedis

/// `te model rollout status|restore`: the shared rollout state every gateway replica follows (DESIGN.md
/// "Model quality"; `RolloutState`), and the operator's way back to the configured versions.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "The shared canary rollout state (REDIS_URL): status, or restore the configured versions.",
        discussion: """
            Gateways, the outcome-tracker and this command change the state only by compare-and-set on its \
            generation, each change appending one RolloutEvent to te:rollout (ROLLOUT_STREAM) in the same step. \
            Every gateway replica follows the state within ROLLOUT_POLL_MS.
            """,
        subcommands: [Status.self, Restore.self])

    struct Target: ParsableArguments {
        @Option(help: "Model name. Default: MODEL_NAME, else trade_eligibility.")
        var model: String = Env.optional("MODEL_NAME") ?? "trade_eligibility"

        var stream: String {
            Env.optional("ROLLOUT_STREAM") ?? StreamKey.rollout
        }

        func store(_ redis: RedisClient) -> RolloutStore { RolloutStore(redis: redis, model: model, stream: stream) }
    }

    static func describe(_ s: RolloutState, model: String, format: OutputOptions) throws {
        let serving = s.primaryVersion.map { p in
            RolloutState.servingPrimary(s.status, primary: p, canary: s.canaryVersion ?? p)
        }
        if format.json {
            try format.printJSON([
                "model": model, "generation": s.generation, "status": s.status.rawValue,
                "primary_version": s.primaryVersion as Any? ?? NSNull(),
                "canary_version": s.canaryVersion as Any? ?? NSNull(),
                "serving_primary": serving as Any? ?? NSNull(), "ts_ns": s.tsNs as Any? ?? NSNull(),
                "event_id": s.eventId as Any? ?? NSNull()
            ])
            return
        }
        guard s.generation > 0 else {
            print("\(model): generation 0 (no rollout step yet): every gateway serves its configured versions")
            return
        }
        let when = s.tsNs.map { format.time(ms: $0 / 1_000_000) } ?? "-"
        print(
            Inspect.table(
                ["MODEL", "GENERATION", "STATUS", "PRIMARY", "CANARY", "SERVING AS PRIMARY", "SINCE", "EVENT"],
                [
                    [
                        model, String(s.generation), s.status.rawValue, s.primaryVersion ?? "-", s.canaryVersion ?? "-",
                        serving ?? "-", when, s.eventId ?? "-"
                    ]
                ]))
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the shared rollout state.")
        @OptionGroup var target: Target
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let redis = try Inspect.redis()
            defer { redis.close() }
            try RolloutCommand.describe(try await target.store(redis).read(), model: target.model, format: format)
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Return every gateway to its configured primary and canary (after a rollback or a promotion).")
        @OptionGroup var target: Target
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let redis = try Inspect.redis()
            defer { redis.close() }
            let store = target.store(redis)
            let current = try await store.read()
            guard let primary = current.primaryVersion, let canary = current.canaryVersion,
                let next = current.next(.restore, primary: primary, canary: canary)
            else {
                print(
                    "nothing to restore: \(target.model) is at generation \(current.generation), \(current.status.rawValue)"
                )
                return
            }
            let event = RolloutState.event(
                .restore, model: target.model, primary: primary, canary: canary, metric: nil, value: nil, limit: nil,
                replica: "te@" + StreamWorkerConfiguration.hostName(), eventId: RolloutStore.newEventID(),
                tsNs: wallClockNs(), restoring: current.status)
            switch try await store.transition(
                expected: current.generation, to: next, primary: primary, canary: canary, event: event)
            {
            case .applied(let state, _):
                try RolloutCommand.describe(state, model: target.model, format: format)
            case .conflict(let generation):
                throw CLIError(
                    "the rollout state changed while restoring (now generation \(generation)); run `te model rollout status` and retry"
                )
            }
        }
    }
}
