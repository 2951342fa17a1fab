// Load generator for the gateway's POST /v1/score over HTTP/1.1 keep-alive (one blocking socket per
// connection, each on its own thread), latencies in an HdrHistogram.
//
//   closed loop: N connections, each sends its next request when the previous answer arrived.
//   open loop:   a fixed total rate spread over N connections; each request's latency is measured from
//                its INTENDED send time, so a stalled server is charged for the requests it delayed
//                (coordinated omission corrected).
//
// gateway-bench --port 8080 --mode closed --connections 32 --duration 10 [--features|--memory SYMBOL]
//               [--rate 5000] [--label name]   → one JSON object on stdout
import Foundation
import Histogram

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var host = "127.0.0.1"
    var port = 8080
    var mode = "closed"
    var connections = 1
    var duration = 10.0
    var warmup = 2.0
    var rate = 1000.0
    var symbol = "BTCUSDT"
    var withFeatures = true
    var label = ""
    /// `GET <path>` instead of POST /v1/score: the HTTP server's own floor (e.g. `/healthz`).
    var getPath: String?

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--host": host = args.next()!
            case "--port": port = Int(args.next()!)!
            case "--mode": mode = args.next()!
            case "--connections": connections = Int(args.next()!)!
            case "--duration": duration = Double(args.next()!)!
            case "--warmup": warmup = Double(args.next()!)!
            case "--rate": rate = Double(args.next()!)!
            case "--features": withFeatures = true
            case "--memory":
                withFeatures = false
                symbol = args.next()!
            case "--label": label = args.next()!
            case "--get": getPath = args.next()!
            default:
                FileHandle.standardError.write(Data("unknown argument \(a)\n".utf8))
                exit(2)
            }
        }
    }
}

func nowNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

final class Connection {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 65536)
    var pending: [UInt8] = []

    init(host: String, port: Int) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        precondition(rc == 0, "connect to \(host):\(port) failed: errno \(errno)")
    }

    /// The `source` of the last answer (`model`, `cache`, `rules`, `abstain`), so a run can show which
    /// path it actually measured.
    var lastSource = "-"
    /// The `reason` of the last answer (why earlier sources of the chain did not answer), `-` when none.
    var lastReason = "-"

    /// Sends the request and reads one response; returns the HTTP status.
    func roundTrip(_ request: [UInt8]) -> Int {
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes {
                send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 {
                if errno == EINTR { continue }
                return -1
            }
            sent += n
        }
        while true {
            if let (status, length) = parse() {
                lastSource = Self.string(after: Self.sourceKey, in: pending[0..<length])
                lastReason = Self.string(after: Self.reasonKey, in: pending[0..<length])
                pending.removeFirst(length)
                return status
            }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, 65536, 0) }
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return -1
            }
            pending.append(contentsOf: buffer[0..<n])
        }
    }

    static let sourceKey = Array(#""source":""#.utf8)
    static let reasonKey = Array(#""reason":""#.utf8)

    /// The JSON string value after `key` (`"name":"`) in the response, `-` when absent (or null).
    static func string(after key: [UInt8], in response: ArraySlice<UInt8>) -> String {
        let bytes = Array(response)
        guard bytes.count > key.count else { return "-" }
        for i in 0...(bytes.count - key.count) where bytes[i] == key[0] {
            if Array(bytes[i..<(i + key.count)]) == key {
                let start = i + key.count
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: "\"") { end += 1 }
                return String(decoding: bytes[start..<end], as: UTF8.self)
            }
        }
        return "-"
    }

    /// (status, total length) of a complete response at the head of `pending`.
    func parse() -> (Int, Int)? {
        guard pending.count > 12 else { return nil }
        // Find end of headers.
        var end = -1
        var i = 3
        while i < pending.count {
            if pending[i] == 10, pending[i - 1] == 13, pending[i - 2] == 10, pending[i - 3] == 13 {
                end = i + 1
                break
            }
            i += 1
        }
        guard end > 0 else { return nil }
        let head = String(decoding: pending[0..<end], as: UTF8.self).lowercased()
        let status = Int(head.dropFirst(9).prefix(3)) ?? 0
        var length = 0
        if let r = head.range(of: "content-length:") {
            let rest = head[r.upperBound...].drop(while: { $0 == " " })
            length = Int(rest.prefix(while: { $0.isNumber })) ?? 0
        }
        guard pending.count >= end + length else { return nil }
        return (status, end + length)
    }
}

let o = Options()
let body: String =
    o.withFeatures
    // ts_ns and freshness_ms too: the Python peer gateway (../shared/peers/fastapi_gateway) requires both.
    ? #"{"symbol":"\#(o.symbol)","ts_ns":1722470400000000000,"features":[0.5,0.3,0.2,1,2,0.1,10,0.05],"freshness_ms":10}"#
    : #"{"symbol":"\#(o.symbol)","freshness_ms":600000}"#
let request = Array(
    (o.getPath.map { "GET \($0) HTTP/1.1\r\nHost: \(o.host)\r\n\r\n" }
        ?? "POST /v1/score HTTP/1.1\r\nHost: \(o.host)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        .utf8)

final class Worker: @unchecked Sendable {  // owned by its one thread until joined via `done`
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    /// Open loop: how late each request left the generator (send time − intended time). Part of its
    /// latency either way; high when the server is behind, and also when the generator's own thread woke
    /// late (a loaded machine), which this separates from the server's share.
    var sendLag = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var ok = 0
    var errors = 0
    var sources: [String: Int] = [:]
    var reasons: [String: Int] = [:]
    /// Open loop: requests due in the window that were never sent because the run hit its hard stop.
    var unsent = 0
    var lastCompletion: UInt64 = 0
    let done = DispatchSemaphore(value: 0)
}

let workers = (0..<o.connections).map { _ in Worker() }
let start = nowNs() + UInt64(o.warmup * 1e9)
let end = start + UInt64(o.duration * 1e9)
// A saturated open loop falls ever further behind its schedule; past this point it stops sending and
// counts what was still due as `unsent` (the run would otherwise last as long as the backlog).
let hardStop = end + UInt64(max(2, o.duration) * 1e9)
for (index, w) in workers.enumerated() {
    let thread = Thread {
        let c = Connection(host: o.host, port: o.port)
        if o.mode == "open" {
            let interval = UInt64(1e9 / (o.rate / Double(o.connections)))
            var intended = nowNs() + UInt64(index) * interval / UInt64(o.connections)
            while intended < end {
                let now = nowNs()
                if now >= hardStop {
                    while intended < end {
                        if intended >= start { w.unsent += 1 }
                        intended += interval
                    }
                    break
                }
                if intended > now {
                    var ts = timespec(
                        tv_sec: Int((intended - now) / 1_000_000_000), tv_nsec: Int((intended - now) % 1_000_000_000))
                    nanosleep(&ts, nil)
                }
                let sent = nowNs()
                let status = c.roundTrip(request)
                let t1 = nowNs()
                if intended >= start {
                    if status == 200 { w.ok += 1 } else { w.errors += 1 }
                    w.sources[c.lastSource, default: 0] += 1
                    if c.lastReason != "-" { w.reasons[c.lastReason, default: 0] += 1 }
                    _ = w.histogram.record(t1 - intended)
                    _ = w.sendLag.record(sent > intended ? sent - intended : 0)
                    w.lastCompletion = t1
                }
                intended += interval
            }
        } else {
            while true {
                let t0 = nowNs()
                if t0 >= end { break }
                let status = c.roundTrip(request)
                let t1 = nowNs()
                if t0 >= start {
                    if status == 200 { w.ok += 1 } else { w.errors += 1 }
                    w.sources[c.lastSource, default: 0] += 1
                    if c.lastReason != "-" { w.reasons[c.lastReason, default: 0] += 1 }
                    _ = w.histogram.record(t1 - t0)
                    w.lastCompletion = t1
                }
            }
        }
        close(c.fd)
        w.done.signal()
    }
    thread.start()
}
for w in workers { w.done.wait() }
var total = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
var sendLag = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
var ok = 0
var errors = 0
var sources: [String: Int] = [:]
var reasons: [String: Int] = [:]
var unsent = 0
var lastCompletion: UInt64 = end
for w in workers {
    sources.merge(w.sources, uniquingKeysWith: +)
    reasons.merge(w.reasons, uniquingKeysWith: +)
    unsent += w.unsent
    lastCompletion = max(lastCompletion, w.lastCompletion)
    total.add(w.histogram)
    sendLag.add(w.sendLag)
    ok += w.ok
    errors += w.errors
}
// Achieved throughput: answers over the time it took to get them. An open loop that fell behind finishes
// its window's requests late, so this is below the target rate exactly when the server could not keep up.
let elapsed = Double(lastCompletion - start) / 1e9
func ms(_ ns: UInt64) -> Double { (Double(ns) / 1e3).rounded() / 1e3 }
var result: [String: Any] = [
    "label": o.label, "mode": o.mode, "connections": o.connections, "features": o.withFeatures ? "request" : "memory",
    "target_rate": o.mode == "open" ? o.rate : 0, "duration_s": o.duration, "ok": ok, "errors": errors,
    "throughput_rps": (Double(ok + errors) / elapsed).rounded(), "elapsed_s": (elapsed * 1000).rounded() / 1000,
    "unsent": unsent,
    "p50_ms": ms(total.valueAtPercentile(50)), "p90_ms": ms(total.valueAtPercentile(90)),
    "sources": sources, "reasons": reasons,
    "p99_ms": ms(total.valueAtPercentile(99)), "p999_ms": ms(total.valueAtPercentile(99.9)), "max_ms": ms(total.max)
]
if o.mode == "open" {
    result["send_lag_p50_ms"] = ms(sendLag.valueAtPercentile(50))
    result["send_lag_p99_ms"] = ms(sendLag.valueAtPercentile(99))
}
let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
print(String(decoding: data, as: UTF8.self))
