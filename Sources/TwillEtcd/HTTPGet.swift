/// One HTTP GET on libcurl, for `twill status` reading the agent's own health endpoint.
public enum HTTPGet {
    /// The status and body of `url`, or why there is none.
    public static func fetch(_ url: String, timeout: Duration = .seconds(5)) async -> Result<(status: Int, body: [UInt8]), HTTPGetError> {
        if let problem = CurlTransport.loaded { return .failure(HTTPGetError(url: url, message: problem)) }
        let ms = max(1, timeout.milliseconds)
        let request = HTTPRequest(
            url: url, body: [], authorization: nil, connectTimeoutMs: ms, timeoutMs: ms,
            caFile: nil, certFile: nil, keyFile: nil, get: true)
        switch await shared.perform(request) {
        case .success(let r): return .success((r.status, r.body))
        case .failure(let e): return .failure(HTTPGetError(url: url, message: e.message))
        }
    }

    private static let shared = CurlTransport()
}

/// Why a GET failed.
public struct HTTPGetError: Error, Sendable, CustomStringConvertible {
    public var url: String
    public var message: String
    public var description: String { "cannot read \(url): \(message)" }
}
