import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// `/healthz` (the process is alive), `/readyz` (subnet.env written and the backend up) and
/// `/metrics` (Prometheus text) on `--healthz-ip:--healthz-port`.
public struct HealthServer: Service {
    let app: Application<RouterResponder<BasicRequestContext>>

    /// - Parameter refresh: called before each scrape to bring pull-style figures (the data
    ///   path's counters) up to date.
    public init(host: String, port: Int, state: AgentState, registry: PrometheusCollectorRegistry,
                refresh: @escaping @Sendable () -> Void = {}, logger: Logger = Logger(label: "twill.health")) {
        let router = Router()
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            let ready = state.isReady
            return Response(
                status: ready ? .ok : .serviceUnavailable,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: ready ? "ready\n" : "not ready: no subnet.env or backend yet\n")))
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

    public func run() async throws {
        try await app.runService()
    }
}
