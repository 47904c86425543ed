#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Metrics
import Synchronization

/// A client for etcd's v3 HTTP/JSON gateway, calling libcurl directly.
///
/// - Several endpoints: a request that cannot connect moves on to the next, and the endpoint
///   that answered is tried first next time.
/// - Connections are reused across requests (idle libcurl handles keep them open).
/// - Blocking libcurl calls run on threads of their own, never on the cooperative pool.
/// - With a username and password it authenticates, sends the token in `Authorization`,
///   and re-authenticates once when etcd says the token is no longer valid.
public final class EtcdClient: EtcdAPI {
    /// The endpoints in the order given, normalised.
    public let endpoints: [String]
    let configuration: EtcdConfiguration
    let transport = CurlTransport()
    let logger: Logger
    private let preferred = Atomic<Int>(0)
    private let token = Mutex<String?>(nil)

    /// Checks the configuration (endpoint URLs, credential pairs); connects lazily.
    public init(_ configuration: EtcdConfiguration) throws(EtcdError) {
        self.endpoints = try configuration.validatedEndpoints()
        self.configuration = configuration
        self.logger = configuration.logger
        for file in [configuration.caFile, configuration.certFile, configuration.keyFile].compactMap({ $0 }) {
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw .invalidConfiguration("cannot read \(file)")
            }
        }
    }

    /// How many TCP connections the client has opened; stays small while connections are reused.
    public var connectionsOpened: Int { transport.connectionsOpened.load(ordering: .relaxed) }

    // MARK: - Request machinery

    func request(url: String, body: [UInt8], streaming: Bool) -> HTTPRequest {
        HTTPRequest(
            url: url, body: body, authorization: token.withLock { $0 },
            connectTimeoutMs: configuration.connectTimeout.milliseconds,
            timeoutMs: streaming ? 0 : configuration.requestTimeout.milliseconds,
            caFile: configuration.caFile, certFile: configuration.certFile, keyFile: configuration.keyFile)
    }

    /// The endpoints in the order to try them: the last one that answered first.
    func endpointOrder() -> [(index: Int, url: String)] {
        let start = preferred.load(ordering: .relaxed)
        return (0..<endpoints.count).map { i in
            let idx = (start + i) % endpoints.count
            return (idx, endpoints[idx])
        }
    }

    func markPreferred(_ index: Int) { preferred.store(index, ordering: .relaxed) }

    var hasCredentials: Bool { configuration.username != nil }

    /// POSTs `body` to `path` and decodes the answer, with failover and one re-authentication.
    func call<Body: Encodable, Answer: Decodable>(
        _ path: String, _ body: Body, as: Answer.Type = Answer.self
    ) async throws(EtcdError) -> Answer {
        let bytes: [UInt8]
        do { bytes = Array(try JSONEncoder().encode(body)) } catch {
            throw .invalidConfiguration("cannot encode request for \(path): \(error)")
        }
        if hasCredentials { try await authenticateIfNeeded() }
        do {
            return try await callOnce(path, bytes)
        } catch .unauthenticated(let endpoint, let message) where hasCredentials {
            logger.info("etcd token refused, authenticating again", metadata: ["endpoint": "\(endpoint)", "reason": "\(message)"])
            try await authenticate()
            return try await callOnce(path, bytes)
        }
    }

    private func callOnce<Answer: Decodable>(_ path: String, _ body: [UInt8]) async throws(EtcdError) -> Answer {
        // Latency and errors per gateway path, for /metrics (no-ops unless a metrics backend is set).
        let started = ContinuousClock.now
        do {
            let answer: Answer = try await callEndpoints(path, body)
            Timer(label: "twill_etcd_request_duration_seconds", dimensions: [("path", path)]).record(since: started)
            return answer
        } catch {
            Timer(label: "twill_etcd_request_duration_seconds", dimensions: [("path", path)]).record(since: started)
            Counter(label: "twill_etcd_request_errors_total", dimensions: [("path", path), ("kind", error.kind)]).increment()
            throw error
        }
    }

    private func callEndpoints<Answer: Decodable>(_ path: String, _ body: [UInt8]) async throws(EtcdError) -> Answer {
        var tried: [String] = []
        var lastFailure = ""
        for (index, endpoint) in endpointOrder() {
            tried.append(endpoint)
            switch await transport.perform(request(url: endpoint + path, body: body, streaming: false)) {
            case .failure(.couldNotConnect(let message)):
                lastFailure = message
                logger.warning("etcd endpoint unreachable, trying the next", metadata: ["endpoint": "\(endpoint)", "error": "\(message)"])
                continue
            case .failure(.failed(let message)):
                throw .transport(endpoints: [endpoint], message: message)
            case .failure(.cancelled):
                throw .transport(endpoints: [endpoint], message: "request cancelled")
            case .success(let result):
                markPreferred(index)
                guard result.status == 200 else {
                    throw Self.mapError(endpoint: endpoint, path: path, status: result.status, body: result.body)
                }
                do {
                    return try JSONDecoder().decode(Answer.self, from: Data(result.body))
                } catch {
                    throw .malformedResponse(endpoint: endpoint, path: path, reason: "\(error)", snippet: Self.snippet(result.body))
                }
            }
        }
        throw .transport(endpoints: tried, message: lastFailure)
    }

    /// Authenticates unless a token is already held.
    func authenticateIfNeeded() async throws(EtcdError) {
        if token.withLock({ $0 }) == nil { try await authenticate() }
    }

    /// Exchanges the username and password for a token (`/v3/auth/authenticate`).
    func authenticate() async throws(EtcdError) {
        guard let name = configuration.username, let password = configuration.password else { return }
        token.withLock { $0 = nil }
        let body: [UInt8]
        do { body = Array(try JSONEncoder().encode(WireAuthRequest(name: name, password: password))) } catch {
            throw .invalidConfiguration("cannot encode credentials: \(error)")
        }
        let answer: WireAuthResponse
        do {
            answer = try await callOnce("/v3/auth/authenticate", body)
        } catch .server(let endpoint, _, _, let message) {
            throw .unauthenticated(endpoint: endpoint, message: message)
        }
        guard let t = answer.token, !t.isEmpty else {
            throw .unauthenticated(endpoint: endpoints.joined(separator: ","), message: "etcd returned no token for user \(name) (is auth enabled?)")
        }
        token.withLock { $0 = t }
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, a) = d.components
        return s * 1_000_000_000 + a / 1_000_000_000
    }

    static func snippet(_ body: [UInt8]) -> String {
        let text = String(decoding: body.prefix(200), as: UTF8.self)
        return text.isEmpty ? "(empty body)" : text
    }

    /// Turns the gateway's error body into a case a caller can act on.
    static func mapError(endpoint: String, path: String, status: Int, body: [UInt8]) -> EtcdError {
        guard let e = try? JSONDecoder().decode(WireErrorBody.self, from: Data(body)),
              let message = e.message ?? e.error
        else {
            return .malformedResponse(endpoint: endpoint, path: path, reason: "HTTP \(status)", snippet: snippet(body))
        }
        return classify(endpoint: endpoint, code: e.code ?? 0, httpStatus: status, message: message)
    }

    static func classify(endpoint: String, code: Int, httpStatus: Int, message: String) -> EtcdError {
        if message.contains("required revision has been compacted") { return .compacted(revision: 0) }
        if message.contains("requested lease not found") { return .leaseNotFound(id: 0) }
        if code == 16 || httpStatus == 401 || message.contains("authentication failed")
            || message.contains("user name is empty") || message.contains("invalid auth token") {
            return .unauthenticated(endpoint: endpoint, message: message)
        }
        if code == 14 || httpStatus == 503 || message.contains("no leader") || message.contains("request timed out") {
            return .unavailable(endpoint: endpoint, message: message)
        }
        return .server(endpoint: endpoint, code: code, httpStatus: httpStatus, message: message)
    }
}

extension Timer {
    /// Records the time elapsed since `start`.
    func record(since start: ContinuousClock.Instant) {
        recordNanoseconds(EtcdClient.nanoseconds(ContinuousClock.now - start))
    }
}
