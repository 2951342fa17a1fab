import Foundation
import Prometheus
import Testing

@testable import ServiceKit

@Suite("process_* metrics")
struct ProcessMetricsTests {
    @Test("/proc/self/stat is read by field position after the last ')' of the command name")
    func parsesStat() throws {
        // A command name with spaces and a ')' of its own: fields must be counted after the last one.
        let stat =
            "4242 (te top (x)) S 1 4242 4242 0 -1 4194304 128 0 0 0 250 50 0 0 20 0 7 0 1000 3133440 407 18446744073709551615 0"
        let limits = """
            Limit                     Soft Limit           Hard Limit           Units
            Max cpu time              unlimited            unlimited            seconds
            Max open files            1024                 1048576              files
            """
        let sample = try #require(
            ProcessSample.parse(
                stat: stat, uptime: "5000.50 9000.00\n", limits: limits, openFDs: 12, now: 1_000_000,
                ticksPerSecond: 100,
                pageSize: 4096))
        #expect(sample.cpuSeconds == 3.0)  // (250 + 50) ticks / 100
        #expect(sample.threads == 7)
        #expect(sample.virtualBytes == 3_133_440)
        #expect(sample.residentBytes == 407 * 4096)
        #expect(sample.startTimeSeconds == 1_000_000 - 5000.5 + 10)  // boot time + 1000 ticks
        #expect(sample.maxFDs == 1024)
        #expect(sample.openFDs == 12)
        #expect(
            ProcessSample.parse(
                stat: "garbage", uptime: "1", limits: "", openFDs: 0, now: 0, ticksPerSecond: 100, pageSize: 4096)
                == nil)
    }

    @Test("the registry exports the process_* families with HELP, and CPU time only grows")
    func exports() throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = ProcessMetrics(registry: registry)
        var spin = 0.0
        for i in 0..<2_000_000 { spin += Double(i).squareRoot() }
        #expect(spin > 0)
        metrics.update()
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        for family in [
            "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
            "process_open_fds", "process_max_fds", "process_threads", "process_start_time_seconds"
        ] {
            #expect(text.contains("# HELP \(family) "), "\(family): \(text)")
        }
        func value(_ name: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
                Double($0.split(separator: " ")[1])
            }
        }
        let cpu = try #require(value("process_cpu_seconds_total"))
        #expect(cpu > 0)
        #expect(try #require(value("process_resident_memory_bytes")) > 1_000_000)
        #expect(try #require(value("process_open_fds")) >= 3)
        let start = try #require(value("process_start_time_seconds"))
        #expect(abs(start - Date().timeIntervalSince1970) < 86_400 * 30, "started within the last month: \(start)")
        metrics.update()
        buffer.removeAll()
        registry.emit(into: &buffer)
        let later = String(decoding: buffer, as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix("process_cpu_seconds_total ") }.flatMap { Double($0.split(separator: " ")[1]) }
        #expect(try #require(later) >= cpu)
    }

    @Test("every swift-metrics family of the services gets its HELP text from MetricHelp")
    func helpText() throws {
        let registry = PrometheusCollectorRegistry()
        let factory = HelpTextMetricsFactory(inner: PrometheusMetricsFactory(registry: registry))
        factory.makeCounter(label: "te_stream_entries_processed_total", dimensions: [("stage", "x")]).increment(by: 1)
        factory.makeTimer(label: "te_stream_batch_duration_seconds", dimensions: [("stage", "x")]).recordNanoseconds(
            1000)
        factory.makeRecorder(
            label: "te_stream_pending_entries", dimensions: [("stream", "s"), ("group", "g")], aggregate: false
        ).record(Int64(3))
        factory.makeCounter(label: "not_in_the_table_total", dimensions: []).increment(by: 1)
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        #expect(
            text.contains(
                "# HELP te_stream_entries_processed_total \(MetricHelp.text["te_stream_entries_processed_total"]!)"),
            "\(text)")
        #expect(text.contains("# HELP te_stream_batch_duration_seconds "), "\(text)")
        #expect(text.contains("# HELP te_stream_pending_entries "), "\(text)")
        #expect(text.contains("not_in_the_table_total 1"), "\(text)")
        #expect(text.contains("# HELP not_in_the_table_total") == false)
    }
}
