import Logging
import Metrics
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A client for etcd's v3 HTTP/JSON gateway, calling libcurl directly.
///
/// - Failover: a request that fails because of the member, not because of the request (no
///   connection, no answer within ``EtcdConfiguration/endpointTimeout``, TLS, HTTP 5xx, "no
///   leader", "not capable", "too many requests") moves on to the next endpoint at once, and
///   no request takes longer than ``EtcdConfiguration/requestTimeout`` in all. The endpoint
///   that answered last is tried first; one that failed is tried after the others for
///   ``EtcdConfiguration/endpointCooldown`` (see ``EndpointPool``).
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
    let pool: EndpointPool
    private let token = Mutex<String?>(nil)
    /// The cluster ID the endpoints answered with first (0 until then).
    let clusterID = Atomic<UInt64>(0)

    /// A deadline for every request the current task (and its child tasks) makes, when it is
    /// sooner than ``EtcdConfiguration/requestTimeout`` from the start of the request: a
    /// lease renewal must not wait past the lease's expiry, say.
    @TaskLocal public static var deadline: ContinuousClock.Instant?

    /// Checks the configuration (endpoint URLs, credential pairs, timeouts); connects lazily.
    public init(_ configuration: EtcdConfiguration) throws(EtcdError) {
        self.endpoints = try configuration.validatedEndpoints()
        if let problem = CurlTransport.loaded { throw .invalidConfiguration(problem) }
        self.configuration = configuration
        self.logger = configuration.logger
        self.pool = EndpointPool(endpoints: endpoints, cooldown: configuration.endpointCooldown)
        for file in [configuration.caFile, configuration.certFile, configuration.keyFile].compactMap({ $0 }) {
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw .invalidConfiguration("cannot read \(file)")
            }
        }
    }

    /// How many TCP connections the client has opened; stays small while connections are reused.
    public var connectionsOpened: Int { transport.connectionsOpened.load(ordering: .relaxed) }

    /// Each endpoint's health as this client last saw it, in the order given.
    public var endpointHealth: [EndpointHealth] { pool.health() }

    // MARK: - Request machinery

    func request(url: String, body: [UInt8], timeout: Duration?) -> HTTPRequest {
        let total = timeout.map { max(1, $0.milliseconds) }
        return HTTPRequest(
            url: url, body: body, authorization: token.withLock { $0 },
            connectTimeoutMs: min(configuration.connectTimeout.milliseconds, total ?? Int.max),
            timeoutMs: total ?? 0,
            caFile: configuration.caFile, certFile: configuration.certFile, keyFile: configuration.keyFile)
    }

    var hasCredentials: Bool { configuration.username != nil }

    static func encode<Body: Encodable>(_ body: Body, for path: String) throws(EtcdError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(body)) } catch {
            throw .invalidConfiguration("cannot encode request for \(path): \(error)")
        }
    }

    /// POSTs `body` to `path` and decodes the answer, with failover and one re-authentication.
    func call<Body: Encodable, Answer: WireAnswer>(
        _ path: String, _ body: Body, as: Answer.Type = Answer.self
    ) async throws(EtcdError) -> Answer {
        let bytes = try Self.encode(body, for: path)
        if hasCredentials { try await authenticateIfNeeded() }
        do {
            return try await callOnce(path, bytes)
        } catch .unauthenticated(let endpoint, let message) where hasCredentials {
            logger.info("etcd token refused, authenticating again", metadata: ["endpoint": "\(endpoint)", "reason": "\(message)"])
            try await authenticate()
            return try await callOnce(path, bytes)
        }
    }

    private func callOnce<Answer: WireAnswer>(_ path: String, _ body: [UInt8]) async throws(EtcdError) -> Answer {
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

    /// What one endpoint made of one request.
    enum Attempt<Answer: Sendable>: Sendable {
        case answer(Answer)
        /// The member answered properly and the request failed (compacted, lease not found,
        /// auth...): trying elsewhere would fail the same way.
        case refused(EtcdError)
        /// The member is at fault: try the next one. `kind` labels the metric.
        case memberFailed(kind: String, message: String)
        /// The caller's task was cancelled: nothing was learnt about the member.
        case cancelled
    }

    /// Tries the endpoints in ``EndpointPool`` order until one answers, within the request
    /// deadline. When a whole round fails and at least one member was there but could not
    /// serve (no leader during an election, a timeout), further rounds follow after a short
    /// pause until the deadline; when every member refused the connection, it gives up at once.
    private func callEndpoints<Answer: WireAnswer>(_ path: String, _ body: [UInt8]) async throws(EtcdError) -> Answer {
        let deadline = min(ContinuousClock.now + configuration.requestTimeout, Self.deadline ?? .now + configuration.requestTimeout)
        var failures: [(endpoint: String, message: String)] = []
        var outOfTime = false
        var round = 0
        rounds: while true {
            var anyReachable = false
            for index in pool.order() {
                let remaining = deadline - .now
                if remaining <= .milliseconds(20) {
                    outOfTime = true
                    break rounds
                }
                let endpoint = endpoints[index]
                let attempt: Attempt<Answer> = await self.attempt(index, path, body, timeout: min(configuration.endpointTimeout, remaining))
                switch attempt {
                case .answer(let answer):
                    pool.succeeded(index)
                    if !failures.isEmpty {
                        logger.notice(
                            "etcd request served by another endpoint",
                            metadata: [
                                "path": "\(path)", "endpoint": "\(endpoint)",
                                "failed": "\(Set(failures.map(\.endpoint)).sorted().joined(separator: ","))",
                            ])
                    }
                    return answer
                case .refused(let error):
                    pool.succeeded(index)
                    throw error
                case .cancelled:
                    throw .transport(endpoints: [endpoint], message: "request cancelled")
                case .memberFailed(let kind, let message):
                    pool.failed(index, reason: message, kind: kind)
                    // A refused connection or a certificate problem will not mend in a second;
                    // an election or a busy member may.
                    if kind == "timeout" || kind == "unavailable" || kind == "transport" { anyReachable = true }
                    failures.removeAll { $0.endpoint == endpoint }
                    failures.append((endpoint, message))
                    logger.warning(
                        "etcd endpoint failed, trying the next",
                        metadata: [
                            "endpoint": "\(endpoint)", "path": "\(path)", "reason": "\(kind)", "error": "\(message)",
                        ])
                }
            }
            guard anyReachable, !Task.isCancelled else { break }
            round += 1
            let pause = min(Duration.milliseconds(250 * round), .seconds(1))
            guard deadline - .now > pause + .milliseconds(20) else {
                outOfTime = true
                break
            }
            try? await Task.sleep(for: pause)
        }
        var message = failures.map { "\($0.endpoint): \($0.message)" }.joined(separator: "; ")
        if outOfTime { message += (message.isEmpty ? "" : "; ") + "request deadline reached" }
        throw .transport(endpoints: failures.map(\.endpoint), message: message)
    }

    /// One request to one endpoint, classified.
    func attempt<Answer: WireAnswer>(_ index: Int, _ path: String, _ body: [UInt8], timeout: Duration) async -> Attempt<Answer> {
        let endpoint = endpoints[index]
        switch await transport.perform(request(url: endpoint + path, body: body, timeout: timeout)) {
        case .failure(.cancelled):
            return .cancelled
        case .failure(let failure):
            return .memberFailed(kind: failure.kind, message: failure.message)
        case .success(let result):
            guard result.status == 200 else {
                let error = Self.mapError(endpoint: endpoint, path: path, status: result.status, body: result.body)
                if case .unavailable(_, let message) = error { return .memberFailed(kind: "unavailable", message: message) }
                return .refused(error)
            }
            let answer: Answer
            do {
                answer = try JSONDecoder().decode(Answer.self, from: Data(result.body))
            } catch {
                return .refused(.malformedResponse(endpoint: endpoint, path: path, reason: "\(error)", snippet: Self.snippet(result.body)))
            }
            if let e = answer.wireError {
                let error = Self.classify(
                    endpoint: endpoint, code: e.grpc_code ?? 0, httpStatus: e.http_code ?? 0, message: e.message ?? "")
                if case .unavailable(_, let message) = error { return .memberFailed(kind: "unavailable", message: message) }
                return .refused(error)
            }
            noteCluster(answer.wireHeader, endpoint: endpoint)
            return .answer(answer)
        }
    }

    /// Remembers the cluster ID; says so when it changes (a restore, or endpoints of two clusters).
    @discardableResult
    func noteCluster(_ header: WireHeader?, endpoint: String) -> (known: UInt64, current: UInt64)? {
        guard let raw = header?.cluster_id?.value, raw != 0 else { return nil }
        let current = UInt64(bitPattern: raw)
        let known = clusterID.exchange(current, ordering: .relaxed)
        guard known != 0, known != current else { return nil }
        logger.error(
            "etcd answered for another cluster than before (restored from a snapshot, or endpoints of two clusters?)",
            metadata: ["endpoint": "\(endpoint)", "was": "\(String(known, radix: 16))", "now": "\(String(current, radix: 16))"])
        return (known, current)
    }

    /// Authenticates unless a token is already held.
    func authenticateIfNeeded() async throws(EtcdError) {
        if token.withLock({ $0 }) == nil { try await authenticate() }
    }

    /// Exchanges the username and password for a token (`/v3/auth/authenticate`).
    func authenticate() async throws(EtcdError) {
        guard let name = configuration.username, let password = configuration.password else { return }
        token.withLock { $0 = nil }
        let body = try Self.encode(WireAuthRequest(name: name, password: password), for: "/v3/auth/authenticate")
        let answer: WireAuthResponse
        do {
            answer = try await callOnce("/v3/auth/authenticate", body)
        } catch .server(let endpoint, _, _, let message) {
            throw .unauthenticated(endpoint: endpoint, message: message)
        }
        guard let t = answer.token, !t.isEmpty else {
            throw .unauthenticated(
                endpoint: endpoints.joined(separator: ","), message: "etcd returned no token for user \(name) (is auth enabled?)")
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
            // A proxy's or a dying member's page: the member's fault when the status says so.
            if status >= 500 || status == 429 { return .unavailable(endpoint: endpoint, message: "HTTP \(status): \(snippet(body))") }
            return .malformedResponse(endpoint: endpoint, path: path, reason: "HTTP \(status)", snippet: snippet(body))
        }
        return classify(endpoint: endpoint, code: e.code ?? 0, httpStatus: status, message: message)
    }

    /// Messages that mean "this member cannot serve now; another may", whatever their code.
    static let unavailableMessages = [
        "no leader", "not capable", "too many requests", "request timed out", "leader changed",
        "unhealthy cluster", "server stopped", "timed out",
    ]

    static func classify(endpoint: String, code: Int, httpStatus: Int, message: String) -> EtcdError {
        if message.contains("required revision has been compacted") { return .compacted(revision: 0) }
        if message.contains("requested lease not found") { return .leaseNotFound(id: 0) }
        if code == 16 || httpStatus == 401 || message.contains("authentication failed")
            || message.contains("user name is empty") || message.contains("invalid auth token")
        {
            return .unauthenticated(endpoint: endpoint, message: message)
        }
        // gRPC Unavailable (14), ResourceExhausted (8, "too many requests"), DeadlineExceeded
        // (4); HTTP 5xx and 429 as the gateway maps them.
        if code == 14 || code == 8 || code == 4 || httpStatus >= 500 || httpStatus == 429
            || unavailableMessages.contains(where: message.contains)
        {
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
