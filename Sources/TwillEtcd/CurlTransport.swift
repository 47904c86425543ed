import CCurl
import Synchronization
import TwillSystem

/// One HTTP POST as the etcd client makes it.
struct HTTPRequest: Sendable {
    var url: String
    var body: [UInt8]
    var authorization: String?
    var connectTimeoutMs: Int
    /// Whole-transfer limit; 0 for streams that stay open (watch).
    var timeoutMs: Int
    var caFile: String?
    var certFile: String?
    var keyFile: String?
    /// A GET (no body) instead of etcd's POSTs.
    var get = false
}

/// What a finished transfer produced.
struct HTTPResult: Sendable {
    var status: Int
    var body: [UInt8]
}

/// Why a transfer did not produce an answer. Every case but ``cancelled`` and
/// ``aborted`` is the member's fault (or the network's): another endpoint may do better.
enum TransferError: Error, Sendable {
    /// No connection could be made (refused, unresolvable, connect timeout).
    case couldNotConnect(String)
    /// Connected, but no (complete) answer within the time allowed.
    case timedOut(String)
    /// The TLS handshake or certificate check failed.
    case tls(String)
    /// Connected but the exchange broke off (reset, empty reply).
    case failed(String)
    /// Our own cancellation (the caller went away).
    case cancelled
    /// Stopped by the client on purpose (a watch that went silent), for the given reason.
    case aborted(String)

    var message: String {
        switch self {
        case .couldNotConnect(let m), .timedOut(let m), .tls(let m), .failed(let m), .aborted(let m): m
        case .cancelled: "request cancelled"
        }
    }

    /// A short label for metrics.
    var kind: String {
        switch self {
        case .couldNotConnect: "connect"
        case .timedOut: "timeout"
        case .tls: "tls"
        case .failed: "transport"
        case .cancelled: "cancelled"
        case .aborted: "stalled"
        }
    }
}

/// Set from any thread to stop a transfer; libcurl's progress callback polls it (at least
/// once a second, even on an idle stream), so stopping is prompt without signals.
final class CancelFlag: Sendable {
    private let flag = Atomic<Int>(0)
    private let why = Mutex<String>("")
    /// The caller went away.
    func cancel() { flag.store(1, ordering: .relaxed) }
    /// The client gave up on this transfer (see ``TransferError/aborted(_:)``).
    func abort(_ reason: String) {
        why.withLock { $0 = reason }
        flag.store(2, ordering: .relaxed)
    }
    var isStopped: Bool { flag.load(ordering: .relaxed) != 0 }
    var isCancelled: Bool { flag.load(ordering: .relaxed) == 1 }
    var abortReason: String? { flag.load(ordering: .relaxed) == 2 ? why.withLock { $0 } : nil }
}

/// Receives the body of one transfer on the thread running it.
final class TransferSink: @unchecked Sendable { // touched only by the thread performing the transfer
    var body: [UInt8] = []
    /// For streams: called with each piece as it arrives; returning false aborts the transfer.
    let onChunk: (@Sendable (UnsafeRawBufferPointer) -> Bool)?
    let cancel: CancelFlag
    /// Unary answers larger than this are cut off rather than filling memory.
    static let maxBody = 256 << 20

    init(cancel: CancelFlag, onChunk: (@Sendable (UnsafeRawBufferPointer) -> Bool)? = nil) {
        self.cancel = cancel
        self.onChunk = onChunk
    }
}

private let writeCallback: curl_write_callback = { ptr, size, count, userdata in
    guard let userdata else { return 0 }
    let sink = Unmanaged<TransferSink>.fromOpaque(userdata).takeUnretainedValue()
    let n = size * count
    guard let ptr, n > 0 else { return n }
    let chunk = UnsafeRawBufferPointer(start: ptr, count: n)
    if let onChunk = sink.onChunk {
        return onChunk(chunk) ? n : 0
    }
    if sink.body.count + n > TransferSink.maxBody { return 0 }
    sink.body.append(contentsOf: chunk)
    return n
}

private let progressCallback: curl_xferinfo_callback = { userdata, _, _, _, _ in
    guard let userdata else { return 0 }
    let sink = Unmanaged<TransferSink>.fromOpaque(userdata).takeUnretainedValue()
    return sink.cancel.isStopped ? 1 : 0
}

/// A libcurl easy handle. It is reused request after request so that its connection cache
/// keeps TCP (and TLS) connections to etcd open: no handshake per request.
final class CurlEasyHandle: @unchecked Sendable { // owned by one thread at a time, handed over through the pool's lock
    let raw: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>

    init?() {
        guard CurlTransport.loaded == nil, let h = twill_curl_easy_init() else { return nil }
        raw = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        twill_curl_easy_cleanup(raw)
        errorBuffer.deallocate()
    }

    /// Runs one transfer to completion on the calling thread (which blocks).
    func perform(_ request: HTTPRequest, sink: TransferSink) -> Result<Int, TransferError> {
        // reset clears options but keeps the connection cache, which is the point of reuse.
        twill_curl_easy_reset(raw)
        errorBuffer[0] = 0
        var headers: UnsafeMutablePointer<curl_slist>? = nil
        headers = twill_curl_slist_append(headers, "Content-Type: application/json")
        headers = twill_curl_slist_append(headers, "Expect:")
        if let auth = request.authorization {
            headers = twill_curl_slist_append(headers, "Authorization: \(auth)")
        }
        defer { twill_curl_slist_free_all(headers) }

        let h = raw
        _ = twill_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)
        _ = twill_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = twill_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1) // threads + signals do not mix
        _ = twill_curl_setopt_long(h, request.get ? CURLOPT_HTTPGET : CURLOPT_POST, 1)
        _ = twill_curl_setopt_slist(h, CURLOPT_HTTPHEADER, headers)
        _ = twill_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeoutMs)
        _ = twill_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, request.timeoutMs)
        _ = twill_curl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
        _ = twill_curl_setopt_long(h, CURLOPT_TCP_KEEPIDLE, 30)
        _ = twill_curl_setopt_long(h, CURLOPT_TCP_KEEPINTVL, 10)
        _ = twill_curl_setopt_long(h, CURLOPT_TCP_NODELAY, 1)
        if let ca = request.caFile { _ = twill_curl_setopt_string(h, CURLOPT_CAINFO, ca) }
        if let cert = request.certFile { _ = twill_curl_setopt_string(h, CURLOPT_SSLCERT, cert) }
        if let key = request.keyFile { _ = twill_curl_setopt_string(h, CURLOPT_SSLKEY, key) }
        _ = twill_curl_setopt_write_function(h, writeCallback)
        _ = twill_curl_setopt_xferinfo_function(h, progressCallback)
        _ = twill_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
        let opaque = Unmanaged.passUnretained(sink).toOpaque()
        _ = twill_curl_setopt_pointer(h, CURLOPT_WRITEDATA, opaque)
        _ = twill_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, opaque)

        let code: CURLcode =
            request.get
            ? withExtendedLifetime(sink) { twill_curl_easy_perform(h) }
            : request.body.withUnsafeBytes { body in
                _ = twill_curl_setopt_long(h, CURLOPT_POSTFIELDSIZE, body.count)
                _ = twill_curl_setopt_pointer(h, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: body.baseAddress))
                return withExtendedLifetime(sink) { twill_curl_easy_perform(h) }
            }
        // The body pointer must not outlive this call.
        _ = twill_curl_setopt_pointer(h, CURLOPT_POSTFIELDS, nil)

        if code == CURLE_OK {
            return .success(twill_curl_response_code(h))
        }
        if sink.cancel.isCancelled { return .failure(.cancelled) }
        if let reason = sink.cancel.abortReason { return .failure(.aborted(reason)) }
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty ? String(cString: twill_curl_easy_strerror(code)) : detail
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .failure(.couldNotConnect(message))
        case CURLE_OPERATION_TIMEDOUT where twill_curl_connect_time_us(h) == 0:
            return .failure(.couldNotConnect(message))
        case CURLE_OPERATION_TIMEDOUT:
            return .failure(.timedOut(message))
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS:
            return .failure(.tls(message))
        default:
            return .failure(.failed(message))
        }
    }
}

/// Runs libcurl transfers on threads of their own, never on Swift's cooperative pool, and
/// keeps a few idle easy handles (and so their open connections) for the next request.
final class CurlTransport: Sendable {
    /// Loads libcurl once; the error says what is missing when it cannot be.
    static let loaded: String? = {
        var buffer = [CChar](repeating: 0, count: 256)
        return twill_curl_load(&buffer, buffer.count) == 0 ? nil : String(cString: buffer)
    }()

    private let idle = Mutex<[CurlEasyHandle]>([])
    /// New TCP connections opened so far (reused ones do not count): shows reuse working.
    let connectionsOpened = Atomic<Int>(0)
    private let maxIdle = 8

    init() {}

    private func checkout() -> CurlEasyHandle? {
        if let h = idle.withLock({ $0.popLast() }) { return h }
        return CurlEasyHandle()
    }

    private func checkin(_ handle: CurlEasyHandle) {
        idle.withLock { if $0.count < maxIdle { $0.append(handle) } }
    }

    /// Performs `request` off the cooperative pool (``Blocking``); the awaiting task is
    /// suspended, not blocked.
    /// `onChunk`, when given, sees the body as it streams and the result's body stays empty.
    func perform(
        _ request: HTTPRequest,
        cancel: CancelFlag = CancelFlag(),
        onChunk: (@Sendable (UnsafeRawBufferPointer) -> Bool)? = nil
    ) async -> Result<HTTPResult, TransferError> {
        await withTaskCancellationHandler {
            await Blocking.run { () -> Result<HTTPResult, TransferError> in
                guard let handle = self.checkout() else { return .failure(.failed("libcurl could not create a handle")) }
                let sink = TransferSink(cancel: cancel, onChunk: onChunk)
                let outcome = handle.perform(request, sink: sink)
                self.connectionsOpened.add(twill_curl_num_connects(handle.raw), ordering: .relaxed)
                // A streaming handle that was cut off may hold a half-read connection; drop it.
                if onChunk == nil { self.checkin(handle) }
                return outcome.map { HTTPResult(status: $0, body: sink.body) }
            }
        } onCancel: {
            cancel.cancel()
        }
    }
}
