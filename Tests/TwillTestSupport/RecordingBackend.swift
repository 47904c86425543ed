import Synchronization
import TwillDatapath

/// A backend that records what the agent asked of it, in order, and fails on demand: for
/// the agent's rules about its backend (order, serialization, retries) without a kernel.
public final class RecordingBackend: Backend, Sendable {
    /// One call the agent made.
    public enum Call: Sendable, Equatable, CustomStringConvertible {
        case prepare
        case start(NodeAddressing, peers: [PeerLease])
        case added(PeerLease)
        case removed(PeerLease)
        case reconcile([PeerLease])
        case stop
        case teardown

        public var description: String {
            func names(_ p: [PeerLease]) -> String { p.map { "\($0.subnet)" }.sorted().joined(separator: ",") }
            switch self {
            case .prepare: return "prepare"
            case .start(let l, let p): return "start \(l.ipv4Subnet.map { "\($0)" } ?? "-") [\(names(p))]"
            case .added(let p): return "added \(p.subnet)"
            case .removed(let p): return "removed \(p.subnet)"
            case .reconcile(let p): return "reconcile [\(names(p))]"
            case .stop: return "stop"
            case .teardown: return "teardown"
            }
        }
    }

    /// What a failing call throws.
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public var call: String
        public var description: String { "recording backend: \(call) failed (injected)" }
    }

    public let type: String
    private let mtu: Int
    private let state = Mutex<(calls: [Call], failNext: [String], inside: Int, overlapped: Bool)>(([], [], 0, false))

    public init(type: String = "host-gw", mtu: Int = 1500) {
        self.type = type
        self.mtu = mtu
    }

    /// Every call so far, in order.
    public var calls: [Call] { state.withLock { $0.calls } }
    /// The calls as text (`added 198.18.2.0/24`, `reconcile [...]`).
    public var log: [String] { calls.map(\.description) }
    public func clear() { state.withLock { $0.calls.removeAll() } }
    /// Whether two calls were ever inside the backend at once (the agent must serialize them).
    public var overlapped: Bool { state.withLock { $0.overlapped } }

    /// The next call of this kind ("start", "added", "removed", "reconcile") throws.
    public func failNext(_ call: String) { state.withLock { $0.failNext.append(call) } }

    public func prepare() async throws -> BackendAdvert {
        try await record(.prepare, "prepare")
        return BackendAdvert(mtu: mtu, backendType: type)
    }

    public func start(local: NodeAddressing) async throws { try await record(.start(local, peers: []), "start") }
    public func start(local: NodeAddressing, peers: [PeerLease]) async throws { try await record(.start(local, peers: peers), "start") }
    public func peerAdded(_ peer: PeerLease) async throws { try await record(.added(peer), "added") }
    public func peerRemoved(_ peer: PeerLease) async throws { try await record(.removed(peer), "removed") }
    public func reconcile(peers: [PeerLease]) async throws { try await record(.reconcile(peers), "reconcile") }
    public func stop() async { try? await record(.stop, "stop") }
    public func teardown() async { try? await record(.teardown, "teardown") }

    private func record(_ call: Call, _ name: String) async throws {
        let fail = state.withLock { s -> Bool in
            s.inside += 1
            if s.inside > 1 { s.overlapped = true }
            s.calls.append(call)
            guard let i = s.failNext.firstIndex(of: name) else { return false }
            s.failNext.remove(at: i)
            return true
        }
        // A suspension inside the call, as a real backend's netlink round trip would be: a
        // second caller that is not held off by the agent's lock gets in here.
        await Task.yield()
        state.withLock { $0.inside -= 1 }
        if fail { throw Failure(call: name) }
    }
}
