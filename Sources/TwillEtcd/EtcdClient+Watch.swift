#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension EtcdClient {
    /// Watches every key starting with `prefix`.
    ///
    /// The stream yields one `WatchResponse` per gateway message: first a `created` one, then
    /// events, and (with progress notifications) empty ones that advance the revision. It ends
    /// by throwing: `EtcdError.compacted(revision:)` when `fromRevision` is compacted (list
    /// again and watch from that list's revision + 1), `.watchClosed` when the server drops
    /// the stream, `.transport` when no endpoint answers. Cancelling the consuming task, or
    /// dropping the stream, closes the transfer.
    public func watch(prefix: String, fromRevision: Int64?) -> AsyncThrowingStream<WatchResponse, any Error> {
        watch(key: prefix, rangeEnd: prefixRangeEnd(prefix), fromRevision: fromRevision)
    }

    /// Watches one key, or the range [key, rangeEnd) when `rangeEnd` is given.
    public func watch(
        key: String, rangeEnd: [UInt8]? = nil, fromRevision: Int64? = nil,
        prevKV: Bool = false, progressNotify: Bool = true
    ) -> AsyncThrowingStream<WatchResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let cancel = CancelFlag()
        let create = WireWatchCreate(create_request: .init(
            key: WireBytes(key), range_end: rangeEnd.map(WireBytes.init),
            start_revision: fromRevision.map(WireInt.init), progress_notify: progressNotify, prev_kv: prevKV))
        let task = Task { await self.runWatch(create, continuation: continuation, cancel: cancel) }
        continuation.onTermination = { _ in
            cancel.cancel()
            task.cancel()
        }
        return stream
    }

    private func runWatch(
        _ create: WireWatchCreate,
        continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation,
        cancel: CancelFlag
    ) async {
        let body: [UInt8]
        do {
            body = Array(try JSONEncoder().encode(create))
            if hasCredentials { try await authenticateIfNeeded() }
        } catch {
            continuation.finish(throwing: error)
            return
        }
        var reauthenticated = false
        attempt: while true {
            var tried: [String] = []
            var lastFailure = ""
            for (index, endpoint) in endpointOrder() {
                tried.append(endpoint)
                let parser = WatchStreamParser(endpoint: endpoint, continuation: continuation)
                let result = await transport.perform(
                    request(url: endpoint + "/v3/watch", body: body, streaming: true),
                    cancel: cancel, onChunk: { parser.feed($0) })
                if cancel.isCancelled {
                    continuation.finish()
                    return
                }
                switch result {
                case .failure(.couldNotConnect(let message)):
                    lastFailure = message
                    logger.warning("etcd endpoint unreachable for watch, trying the next", metadata: ["endpoint": "\(endpoint)", "error": "\(message)"])
                    continue
                case .failure(.cancelled):
                    continuation.finish()
                    return
                case .failure(.failed(let message)) where parser.outcome == nil:
                    continuation.finish(throwing: EtcdError.watchClosed(endpoint: endpoint, reason: message))
                    return
                default:
                    break
                }
                markPreferred(index)
                switch parser.outcome {
                case .unauthenticated(_, let message)? where hasCredentials && !reauthenticated && !parser.delivered:
                    reauthenticated = true
                    logger.info("etcd token refused for watch, authenticating again", metadata: ["reason": "\(message)"])
                    do { try await authenticate() } catch {
                        continuation.finish(throwing: error)
                        return
                    }
                    continue attempt
                case let error?:
                    continuation.finish(throwing: error)
                case nil:
                    continuation.finish(throwing: EtcdError.watchClosed(endpoint: endpoint, reason: "the server closed the stream"))
                }
                return
            }
            continuation.finish(throwing: EtcdError.transport(endpoints: tried, message: lastFailure))
            return
        }
    }
}

/// Turns the watch's newline-delimited JSON into `WatchResponse`s as bytes arrive.
/// Used only by the thread running the transfer; read by the owner after the transfer ends.
final class WatchStreamParser: @unchecked Sendable {
    let endpoint: String
    let continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation
    private var splitter = LineSplitter()
    /// Why the stream must end, once known.
    private(set) var outcome: EtcdError?
    /// Whether anything was passed to the consumer.
    private(set) var delivered = false

    init(endpoint: String, continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation) {
        self.endpoint = endpoint
        self.continuation = continuation
    }

    /// Returns false to stop the transfer.
    func feed(_ chunk: UnsafeRawBufferPointer) -> Bool {
        do {
            try splitter.append(chunk) { line in
                if outcome == nil { handle(line) }
            }
        } catch {
            outcome = .malformedResponse(endpoint: endpoint, path: "/v3/watch", reason: "a watch message larger than \(LineSplitter.maxLine) bytes", snippet: "")
        }
        return outcome == nil
    }

    private func handle(_ line: [UInt8]) {
        let decoder = JSONDecoder()
        guard let message = try? decoder.decode(WireWatchMessage.self, from: Data(line)) else {
            // A non-200 answer carries a unary error body instead of a stream message.
            if let body = try? decoder.decode(WireErrorBody.self, from: Data(line)), let m = body.message ?? body.error {
                outcome = EtcdClient.classify(endpoint: endpoint, code: body.code ?? 0, httpStatus: 0, message: m)
            } else {
                outcome = .malformedResponse(endpoint: endpoint, path: "/v3/watch", reason: "not a watch message", snippet: EtcdClient.snippet(line))
            }
            return
        }
        if let error = message.error {
            outcome = EtcdClient.classify(endpoint: endpoint, code: error.grpc_code ?? 0, httpStatus: error.http_code ?? 0, message: error.message ?? "")
            return
        }
        guard let result = message.result else {
            outcome = .malformedResponse(endpoint: endpoint, path: "/v3/watch", reason: "neither result nor error", snippet: EtcdClient.snippet(line))
            return
        }
        if result.canceled == true {
            if let compacted = result.compact_revision?.value, compacted > 0 {
                outcome = .compacted(revision: compacted)
            } else {
                outcome = .watchClosed(endpoint: endpoint, reason: result.cancel_reason ?? "canceled by the server")
            }
            return
        }
        let events = (result.events ?? []).map { e in
            WatchEvent(
                kind: e.type == "DELETE" ? .delete : .put,
                kv: e.kv?.model ?? KeyValue(key: "", value: Data()),
                previous: e.prev_kv?.model)
        }
        delivered = true
        continuation.yield(WatchResponse(revision: result.header?.revision?.value ?? 0, events: events, created: result.created ?? false))
    }
}
