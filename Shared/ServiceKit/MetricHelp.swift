import Metrics
import Prometheus

/// The `# HELP` text of every metric family the services create through swift-metrics (audit-writer names
/// its own where it registers them). One table, so the text of a family is the same wherever it is created.
public enum MetricHelp {
    public static let text: [String: String] = [
        "te_stream_entries_processed_total": "Stream entries handled by the stage (output written and acknowledged).",
        "te_stream_entries_failed_total": "Stream entries whose handling failed and will be retried or dead-lettered.",
        "te_stream_dlq_total": "Stream entries sent to te:dlq, by reason.",
        "te_stream_batch_duration_seconds": "Time from reading a batch to its output written and acknowledged.",
        "te_stream_consumer_lag_entries": "Entries in the input stream not yet delivered to the stage's group.",
        "te_stream_pending_entries": "Entries delivered to the stage's group and not yet acknowledged.",
        "te_stream_claimed_total": "Pending entries of a dead or stalled consumer claimed by this one.",
        "te_stream_fenced_writes_total":
            "Shard commits refused by Redis because this replica's lease of the shard was gone (docs/sharding.md).",
        "te_stream_fenced_reads_total":
            "Shard reads and claims refused by Redis because this replica's lease of the shard was gone (docs/sharding.md).",
        "te_shards_owned": "Shards of the stage whose lease this replica holds.",
        "te_shard_changes_total": "Shard leases acquired, released for balance, or lost, by change.",
        "te_ingest_messages_consumed_total": "Kafka messages read by ingest.",
        "te_ingest_ticks_total": "Normalized ticks written to te:ticks, by kind.",
        "te_ingest_dlq_total": "Kafka messages ingest could not use, sent to te:dlq, by reason.",
        "te_ingest_kafka_lag_messages":
            "Messages in the assigned partitions not yet read (high watermark minus position).",
        "te_ingest_latency_seconds": "Time from a message's receive timestamp to its tick written to Redis.",
        "te_ingest_book_resyncs_total": "Order books rebuilt from a snapshot after a gap, by symbol.",
        "te_ingest_book_out_of_sync": "1 while a symbol's order book waits for a snapshot after a gap.",
        "te_ingest_book_gaps_total": "Sequence gaps found in a symbol's depth updates.",
        "te_ingest_book_snapshot_overdue_total":
            "Books still out of sync after INGEST_SNAPSHOT_TIMEOUT_MS on the market clock.",
        "te_ingest_offset_resets_total": "Kafka offset resets (retention passed a committed offset).",
        "te_ingest_lost_messages_total": "Messages skipped by offset resets.",
        "te_ingest_redis_retries_total": "Fenced batch writes retried because Redis was unavailable.",
        "te_ingest_commit_failures_total": "Kafka offset commits that failed (retried with the next batch).",
        "te_ingest_redelivered_skipped_total":
            "Redelivered Kafka messages skipped because their ticks were already written.",
        "te_features_quotes_total": "Quotes turned into a feature snapshot, by symbol.",
        "te_features_out_of_order_total": "Ticks older than the symbol's latest, dropped, by symbol.",
        "te_features_window_quotes": "Quotes in the symbol's feature window.",
        "te_features_compute_seconds": "Time to compute one feature snapshot.",
        "te_signals_total": "Signals emitted, by strategy and direction.",
        "te_opportunities_emitted_total":
            "Opportunities emitted (via the shard's outbox to te:opportunities), by why their window closed.",
        "te_opportunities_open_windows": "Aggregation windows currently open.",
        "te_opportunities_relay_failures_total":
            "Relays of a shard's committed outbox to te:opportunities that failed (retried; nothing lost).",
        "te_signals_duplicate_total": "Signals seen twice (redelivery) and ignored.",
        "te_signals_stale_total": "Signals older than their symbol's open window, ignored.",
        "te_signals_low_confidence_total": "Signals below the aggregator's confidence floor, ignored.",
        "te_outcomes_written_total": "Outcomes written to te:outcomes (one per decision).",
        "te_outcome_held_decisions": "Decisions held until the market clock passes their horizon.",
        "te_outcome_unlabelled_total": "Outcomes written without a label (no quote at the decision or the horizon).",
        "te_model_outcomes_total": "Outcomes per model version.",
        "te_model_precision":
            "Share of trade decisions that were eligible, over the rolling window, per model version.",
        "te_model_coverage": "Share of decisions that were trade, over the rolling window, per model version.",
        "te_model_base_rate": "Share of eligible outcomes, over the rolling window, per model version.",
        "te_model_brier":
            "Mean squared error of the score against the outcome, over the rolling window, per model version.",
        "te_model_ece": "Expected calibration error (10 equal-width bins), over the rolling window, per model version.",
        "te_feature_psi": "Population stability index of a feature against the version's training reference.",
        "te_audit_rows_inserted_total": "Rows inserted into decisions.",
        "te_audit_duplicates_skipped_total": "Records already in decisions (redeliveries), skipped.",
        "te_audit_rows_rejected_total": "Records PostgreSQL rejected for their data, dead-lettered.",
        "te_audit_retries_total": "Batch writes retried because PostgreSQL was unavailable.",
        "te_audit_batch_rows": "Records per batch transaction.",
        "te_audit_commit_duration_seconds":
            "Time to write one batch into decisions: its COPY (and, for a redelivery, the read of stored ids and chain head), COMMIT.",
        "te_audit_table_rows_inserted_total": "Rows audit-writer inserted, by table (outcomes, rollout_events).",
        "te_canary_brier_delta":
            "Canary Brier minus the primary's on the judged window (positive: the canary is worse).",
        "te_canary_precision_delta":
            "Canary precision of trade minus the primary's on the judged window (negative: the canary is worse).",
        "te_canary_judged_outcomes":
            "Outcomes in the canary judge's window, by side (canary, primary; shadow pairs count on both).",
        "te_canary_verdict":
            "The canary judge's verdict on outcomes: -1 worse, 0 none (or not enough outcomes), 1 better.",
        "te_rollout_transitions_total":
            "Transitions of the shared rollout state this process made, by kind (rollback, promotion, restore).",
        // gateway
        "te_gateway_request_duration_seconds": "Score request duration, arrival to answer.",
        "te_gateway_requests_total": "Score decisions by decision, source and client.",
        "te_gateway_rate_limited_total": "Requests answered 429 rate_limited (GATEWAY_RATE_LIMIT), by client.",
        "te_gateway_fallback_total": "Why a link of the fallback chain did not answer.",
        "te_gateway_triton_duration_seconds": "Triton inference call duration.",
        "te_gateway_batch_rows": "Rows per batched Triton inference call.",
        "te_gateway_breaker_state": "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        "te_gateway_audit_buffer_depth": "Audit records waiting to be written to te:audit.",
        "te_gateway_audit_dropped_total": "Audit records dropped because the buffer was full.",
        "te_gateway_audit_written_total": "Audit records written to te:audit.",
        "te_gateway_audit_unavailable_total":
            "Decisions answered 503 audit_unavailable: their record did not reach Redis in time (sync durability).",
        "te_gateway_canary_errors_total": "Canary inference calls that failed.",
        "canary_abs_delta": "Absolute difference between canary and primary scores.",
        "canary_disagree_total": "Canary decisions that differ from the primary's.",
        "canary_rollbacks_total": "Automatic canary rollbacks.",
        "te_rollout_generation": "Generation of the shared rollout state this replica follows.",
        "te_rollout_status":
            "1 for the rollout status this replica serves (configured, rolled_back, promoted), else 0.",
        "te_gateway_push_clients": "Push clients connected, by stream and transport.",
        "te_gateway_push_events_total": "Events queued to push clients, by stream.",
        "te_gateway_push_dropped_total": "Push clients dropped by the gateway, by stream, transport and reason.",
        "te_gateway_push_refused_total": "Push connections refused at the client limit, by stream and transport."
    ]

    /// Histogram buckets of the families whose range the shared defaults (100 µs … 10 s; swift-prometheus's
    /// value buckets) do not fit.
    public static let durationBuckets: [String: [Duration]] = [
        // Per-quote compute is around a microsecond.
        "te_features_compute_seconds": [
            .nanoseconds(250), .nanoseconds(500), .microseconds(1), .microseconds(2), .microseconds(5),
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(1000)
        ],
        "te_ingest_latency_seconds": [
            .microseconds(100), .microseconds(250), .microseconds(500), .microseconds(750), .milliseconds(1),
            .microseconds(1500), .milliseconds(2), .milliseconds(3), .milliseconds(5), .microseconds(7500),
            .milliseconds(10), .milliseconds(15), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)
        ],
        "te_audit_commit_duration_seconds": [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)
        ]
    ]
    public static let valueBuckets: [String: [Double]] = [
        "te_audit_batch_rows": [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
    ]
}

/// swift-metrics onto the Prometheus registry, like `PrometheusMetricsFactory`, with each family's HELP text
/// from `MetricHelp` (swift-prometheus's factory registers every family without one).
struct HelpTextMetricsFactory: MetricsFactory {
    let inner: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { inner.registry }

    private func descriptor(_ label: String) -> MetricNameDescriptor? {
        MetricHelp.text[label].map { MetricNameDescriptor(metricName: label, unitName: "", helpText: $0) }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let d = descriptor(label) else { return inner.makeCounter(label: label, dimensions: dimensions) }
        return registry.makeCounter(descriptor: d, labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        guard let d = descriptor(label) else {
            return inner.makeFloatingPointCounter(label: label, dimensions: dimensions)
        }
        return registry.makeCounter(descriptor: d, labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard let d = descriptor(label) else {
            return inner.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
        }
        guard aggregate else { return registry.makeGauge(descriptor: d, labels: dimensions) }
        let buckets = inner.valueHistogramBuckets[label] ?? inner.defaultValueHistogramBuckets
        return registry.makeValueHistogram(descriptor: d, labels: dimensions, buckets: buckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let d = descriptor(label) else { return inner.makeMeter(label: label, dimensions: dimensions) }
        return registry.makeGauge(descriptor: d, labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard let d = descriptor(label) else { return inner.makeTimer(label: label, dimensions: dimensions) }
        let buckets = inner.durationHistogramBuckets[label] ?? inner.defaultDurationHistogramBuckets
        return registry.makeDurationHistogram(descriptor: d, labels: dimensions, buckets: buckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { inner.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        inner.destroyFloatingPointCounter(handler)
    }
    func destroyRecorder(_ handler: any RecorderHandler) { inner.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { inner.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { inner.destroyTimer(handler) }
}
