import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// `/healthz`, `/readyz` and `/metrics` (Prometheus text) on `--healthz-ip:--healthz-port`,
/// all read from the agent's one health model (``AgentState``):
/// - `/healthz`: 200 while every loop makes progress and the data path is not broken beyond
///   self-repair; 503 with the reasons otherwise (restarting the agent may help).
/// - `/readyz`: 200 while the node holds its lease, subnet.env matches it and the backend is
///   up; 503 with the reasons otherwise.
public struct HealthServer: Service {
    let app: Application<RouterResponder<BasicRequestContext>>

    /// - Parameter refresh: called before each scrape to bring pull-style figures (the data
    ///   path's counters) up to date.
    /// - Parameter status: the node's view for `GET /status` (JSON), when the agent gives one.
    public init(
        host: String, port: Int, state: AgentState, registry: PrometheusCollectorRegistry,
        refresh: @escaping @Sendable () -> Void = {}, status: (@Sendable () -> NodeStatus)? = nil,
        logger: Logger = Logger(label: "twill.health")
    ) {
        let router = Router()
        router.get("healthz") { _, _ -> Response in
            let (alive, reasons) = state.liveness
            return Self.answer(alive, ok: "ok\n", failing: "unhealthy", reasons)
        }
        router.get("readyz") { _, _ -> Response in
            let (ready, reasons) = state.readiness
            return Self.answer(ready, ok: "ready\n", failing: "not ready", reasons)
        }
        if let status {
            router.get("status") { _, _ -> Response in
                Response(
                    status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: status().json())))
            }
        }
        router.get("metrics") { _, _ -> Response in
            refresh()
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "twill"), logger: logger)
    }

    static func answer(_ good: Bool, ok: String, failing: String, _ reasons: [String]) -> Response {
        Response(
            status: good ? .ok : .serviceUnavailable,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: good ? ok : "\(failing):\n" + reasons.map { "- \($0)\n" }.joined())))
    }

    public func run() async throws {
        try await app.runService()
    }
}
