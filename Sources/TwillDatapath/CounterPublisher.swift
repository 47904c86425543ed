import Metrics
import Synchronization

/// Turns a data path's absolute counters into increments of swift-metrics counters: it
/// remembers the total each (label, dimensions) had at the last publish. A total that went
/// down (a rebuilt engine starts from zero) counts as new.
final class CounterPublisher: Sendable {
    private let published = Mutex<[String: UInt64]>([:])

    func publish(_ label: String, _ dimensions: [(String, String)], total: UInt64) {
        let key = label + dimensions.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let delta = published.withLock { seen -> UInt64 in
            let before = seen[key] ?? 0
            seen[key] = total
            return total >= before ? total - before : total
        }
        if delta > 0 { Counter(label: label, dimensions: dimensions).increment(by: Int64(clamping: delta)) }
    }
}
