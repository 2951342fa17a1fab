/// One scrape of a Prometheus text exposition (`/metrics`): what `te top` reads from each service.
struct MetricsText: Sendable {
    struct Series: Sendable {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    let series: [Series]

    /// Parses the text format's sample lines (`name{k="v",…} value [timestamp]`); comments, HELP/TYPE and
    /// lines it cannot read are skipped, so one odd line never hides the rest.
    init(_ text: String) {
        var series: [Series] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let first = line.first, first != "#" else { continue }
            if let s = Self.parse(Substring(line)) { series.append(s) }
        }
        self.series = series
    }

    private static func parse(_ line: Substring) -> Series? {
        guard let nameEnd = line.firstIndex(where: { $0 == "{" || $0 == " " }) else { return nil }
        let name = String(line[..<nameEnd])
        var labels: [String: String] = [:]
        var rest = line[nameEnd...]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while let c = rest.first, c != "}" {
                if c == "," || c == " " {
                    rest = rest.dropFirst()
                    continue
                }
                guard let eq = rest.firstIndex(of: "="), rest[rest.index(after: eq)...].first == "\"" else {
                    return nil
                }
                let key = String(rest[..<eq])
                var value = ""
                var i = rest.index(eq, offsetBy: 2)
                var closed = false
                while i < rest.endIndex {
                    let ch = rest[i]
                    if ch == "\\", rest.index(after: i) < rest.endIndex {
                        let next = rest[rest.index(after: i)]
                        value.append(next == "n" ? "\n" : next)
                        i = rest.index(i, offsetBy: 2)
                        continue
                    }
                    if ch == "\"" {
                        closed = true
                        break
                    }
                    value.append(ch)
                    i = rest.index(after: i)
                }
                guard closed else { return nil }
                labels[key] = value
                rest = rest[rest.index(after: i)...]
            }
            guard rest.first == "}" else { return nil }
            rest = rest.dropFirst()
        }
        guard let valueText = rest.split(separator: " ").first, let value = Double(valueText) else { return nil }
        return Series(name: name, labels: labels, value: value)
    }

    /// The sum over every series of `name` whose labels include `matching`; nil when there is none.
    func sum(_ name: String, matching: [String: String] = [:]) -> Double? {
        var total: Double?
        for s in series where s.name == name && matching.allSatisfy({ s.labels[$0.key] == $0.value }) {
            total = (total ?? 0) + s.value
        }
        return total
    }

    /// The values of `name` by the value of its label `label`.
    func values(_ name: String, by label: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for s in series where s.name == name { out[s.labels[label] ?? "", default: 0] += s.value }
        return out
    }

    /// The cumulative bucket counts of histogram `name` summed over its other labels, by upper bound.
    func buckets(_ name: String) -> [(le: Double, count: Double)] {
        var byBound: [Double: Double] = [:]
        for s in series where s.name == name + "_bucket" {
            guard let text = s.labels["le"], let le = text == "+Inf" ? Double.infinity : Double(text) else { continue }
            byBound[le, default: 0] += s.value
        }
        return byBound.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// `histogram_quantile` over the observations between two scrapes (the later one `self`): linear
    /// within the bucket, as Prometheus does; nil without observations in between.
    func quantile(_ q: Double, of name: String, since earlier: MetricsText?) -> Double? {
        let now = buckets(name)
        let before = Dictionary(earlier?.buckets(name).map { ($0.le, $0.count) } ?? [], uniquingKeysWith: +)
        // A restarted service starts its counters again: then its whole history is the window.
        let reset = now.contains { $0.count < (before[$0.le] ?? 0) }
        let counts = now.map { (le: $0.le, count: reset ? $0.count : $0.count - (before[$0.le] ?? 0)) }
        guard let total = counts.last?.count, total > 0 else { return nil }
        let rank = q * total
        var lowerBound = 0.0
        var lowerCount = 0.0
        for bucket in counts {
            if bucket.count >= rank {
                if bucket.le.isInfinite { return lowerBound }
                let inBucket = bucket.count - lowerCount
                return inBucket > 0 ? lowerBound + (bucket.le - lowerBound) * (rank - lowerCount) / inBucket : bucket.le
            }
            lowerBound = bucket.le
            lowerCount = bucket.count
        }
        return lowerBound
    }
}
