import Foundation
import Prometheus
import Synchronization

/// The standard `process_*` families (what Prometheus' own client libraries export), read from /proc at each
/// scrape: CPU time, resident and virtual memory, open and maximum file descriptors, threads, start time.
public final class ProcessMetrics: Sendable {
    private let cpu: Counter
    private let resident: Gauge
    private let virtual: Gauge
    private let openFDs: Gauge
    private let maxFDs: Gauge
    private let threads: Gauge
    private let startTime: Gauge
    /// CPU seconds already added to the counter (the counter only counts up; each scrape adds the difference).
    private let countedCPU = Mutex(0.0)

    public init(registry: PrometheusCollectorRegistry) {
        func name(_ n: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: n, unitName: "", helpText: help)
        }
        cpu = registry.makeCounter(
            descriptor: name("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."))
        resident = registry.makeGauge(
            descriptor: name("process_resident_memory_bytes", "Resident memory size in bytes."))
        virtual = registry.makeGauge(descriptor: name("process_virtual_memory_bytes", "Virtual memory size in bytes."))
        openFDs = registry.makeGauge(descriptor: name("process_open_fds", "Number of open file descriptors."))
        maxFDs = registry.makeGauge(descriptor: name("process_max_fds", "Maximum number of open file descriptors."))
        threads = registry.makeGauge(descriptor: name("process_threads", "Number of OS threads in the process."))
        startTime = registry.makeGauge(
            descriptor: name("process_start_time_seconds", "Start time of the process since the epoch in seconds."))
        update()
    }

    /// Reads /proc/self once; called by `/metrics` before the registry is written out.
    public func update() {
        guard let sample = ProcessSample.read() else { return }
        resident.set(sample.residentBytes)
        virtual.set(sample.virtualBytes)
        openFDs.set(Double(sample.openFDs))
        maxFDs.set(sample.maxFDs)
        threads.set(Double(sample.threads))
        startTime.set(sample.startTimeSeconds)
        let delta = countedCPU.withLock { counted -> Double in
            let d = max(0, sample.cpuSeconds - counted)
            counted += d
            return d
        }
        if delta > 0 { cpu.increment(by: delta) }
    }
}

/// One reading of /proc/self (Linux), parsed without I/O in `parse` so it can be tested on fixed text.
struct ProcessSample: Equatable {
    var cpuSeconds: Double
    var virtualBytes: Double
    var residentBytes: Double
    var threads: Int
    var startTimeSeconds: Double
    var openFDs: Int
    var maxFDs: Double

    static func read() -> ProcessSample? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
            let limits = try? String(contentsOfFile: "/proc/self/limits", encoding: .utf8)
        else { return nil }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return parse(
            stat: stat, uptime: uptime, limits: limits, openFDs: fds, now: Date().timeIntervalSince1970,
            ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))), pageSize: Double(sysconf(Int32(_SC_PAGESIZE))))
    }

    /// `stat` is /proc/self/stat: after the `(comm)` field (which may hold spaces and parentheses, hence the
    /// last `)`), field 3 is the state; utime, stime are fields 14, 15, num_threads 20, starttime 22 (clock
    /// ticks after boot), vsize 23 (bytes), rss 24 (pages).
    static func parse(
        stat: String, uptime: String, limits: String, openFDs: Int, now: Double, ticksPerSecond: Double,
        pageSize: Double
    ) -> ProcessSample? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): field n is fields[n - 3].
        func field(_ n: Int) -> Double? { n - 3 < fields.count ? Double(fields[n - 3]) : nil }
        guard let utime = field(14), let stime = field(15), let threads = field(20), let start = field(22),
            let vsize = field(23), let rss = field(24),
            let up = uptime.split(separator: " ").first.flatMap({ Double($0) }),
            ticksPerSecond > 0
        else { return nil }
        let bootTime = now - up
        var maxFDs = -1.0
        for line in limits.split(separator: "\n") where line.hasPrefix("Max open files") {
            let words = line.dropFirst("Max open files".count).split(separator: " ")
            maxFDs = words.first.flatMap { Double($0) } ?? -1
        }
        return ProcessSample(
            cpuSeconds: (utime + stime) / ticksPerSecond, virtualBytes: vsize, residentBytes: rss * pageSize,
            threads: Int(threads), startTimeSeconds: bootTime + start / ticksPerSecond, openFDs: openFDs, maxFDs: maxFDs
        )
    }
}
