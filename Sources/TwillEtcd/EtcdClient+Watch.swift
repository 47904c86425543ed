import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension EtcdClient {
    /// Watches every key starting with `prefix`; see ``watch(key:rangeEnd:fromRevision:prevKV:progressNotify:)``.
    public func watch(prefix: String, fromRevision: Int64?) -> AsyncThrowingStream<WatchResponse, any Error> {
        watch(key: prefix, rangeEnd: prefixRangeEnd(prefix), fromRevision: fromRevision)
    }

    /// Watches one key, or the range [key, rangeEnd) when `rangeEnd` is given, from
    /// `fromRevision` (or from now when nil).
    ///
    /// The stream survives the loss of a member: when the watch's endpoint fails (the stream
    /// breaks, the member does not answer the watch request within
    /// ``EtcdConfiguration/endpointTimeout``, or it stays silent past
    /// ``EtcdConfiguration/watchProgressTimeout`` and then fails a liveness probe), the watch
    /// is set up again on the next endpoint from the last delivered event's mod_revision + 1
    /// (or a progress notification's revision + 1), so nothing is lost or repeated. Each
    /// message says where to resume (``WatchResponse/resumeRevision``).
    ///
    /// It ends by throwing: ``EtcdError/compacted(revision:)`` when the revision needed is
    /// compacted, ``EtcdError/revisionWentBackwards(endpoint:known:current:)`` or
    /// ``EtcdError/clusterChanged(endpoint:known:current:)`` when etcd was restored (list
    /// again in these three cases), ``EtcdError/transport(endpoints:message:)`` when every
    /// endpoint failed in a row, `.watchClosed` when etcd cancelled it for another reason.
    /// Cancelling the consuming task, or dropping the stream, closes the transfer.
    public func watch(
        key: String, rangeEnd: [UInt8]? = nil, fromRevision: Int64? = nil,
        prevKV: Bool = false, progressNotify: Bool = true
    ) -> AsyncThrowingStream<WatchResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        let session = WatchSession(
            client: self, key: key, rangeEnd: rangeEnd, prevKV: prevKV, progressNotify: progressNotify,
            fromRevision: fromRevision, continuation: continuation)
        let task = Task { await session.run() }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// One logical watch, moved from endpoint to endpoint as members fail.
final class WatchSession: Sendable {
    let client: EtcdClient
    let key: String
    let rangeEnd: [UInt8]?
    let prevKV: Bool
    let progressNotify: Bool
    let continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation
    /// Shared with the transfer thread that parses the stream.
    let state: Mutex<WatchProgress>

    init(
        client: EtcdClient, key: String, rangeEnd: [UInt8]?, prevKV: Bool, progressNotify: Bool, fromRevision: Int64?,
        continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation
    ) {
        self.client = client
        self.key = key
        self.rangeEnd = rangeEnd
        self.prevKV = prevKV
        self.progressNotify = progressNotify
        self.continuation = continuation
        // The cluster this watch's revisions belong to: the one the client last talked to
        // (the listing the caller resumes from), not whatever another request saw later.
        state = Mutex(
            WatchProgress(
                resume: fromRevision, highWater: fromRevision.map { $0 - 1 } ?? 0,
                clusterID: client.clusterID.load(ordering: .relaxed)))
    }

    /// How an attempt on one endpoint ended.
    enum Ending: Sendable {
        case cancelled
        /// The stream must end with this error.
        case terminal(EtcdError)
        /// etcd refused the token before anything was delivered.
        case unauthenticated(String)
        /// The member failed; `created` tells whether the watch had been set up on it.
        case memberFailed(kind: String, message: String, created: Bool)
    }

    func run() async {
        let logger = client.logger
        var failedInRow: [Int] = []
        var messages: [String] = []
        var reauthenticated = false
        // A member that accepts the watch and then drops it at once must not be hammered.
        var quickFailures = 0
        if client.hasCredentials {
            do { try await client.authenticateIfNeeded() } catch {
                continuation.finish(throwing: error)
                return
            }
        }
        while true {
            if Task.isCancelled { return continuation.finish() }
            guard let index = client.pool.order().first(where: { !failedInRow.contains($0) }) else {
                let endpoints = failedInRow.map { client.endpoints[$0] }
                continuation.finish(throwing: EtcdError.transport(endpoints: endpoints, message: messages.joined(separator: "; ")))
                return
            }
            let endpoint = client.endpoints[index]
            let started = ContinuousClock.now
            switch await attempt(index) {
            case .cancelled:
                return continuation.finish()
            case .terminal(let error):
                return continuation.finish(throwing: error)
            case .unauthenticated(let message):
                guard client.hasCredentials, !reauthenticated else {
                    return continuation.finish(throwing: EtcdError.unauthenticated(endpoint: endpoint, message: message))
                }
                reauthenticated = true
                logger.info("etcd token refused for watch, authenticating again", metadata: ["reason": "\(message)"])
                do { try await client.authenticate() } catch {
                    return continuation.finish(throwing: error)
                }
            case .memberFailed(let kind, let message, let created):
                client.pool.failed(index, reason: message, kind: kind)
                if created {
                    // It worked on this member until now: every endpoint gets a new chance,
                    // after a pause that grows while watches keep dying young.
                    failedInRow = [index]
                    messages = ["\(endpoint): \(message)"]
                    if ContinuousClock.now - started < .seconds(10) {
                        quickFailures += 1
                        let pause = min(Duration.milliseconds(250) * (1 << min(quickFailures - 1, 5)), .seconds(5))
                        do { try await Task.sleep(for: pause) } catch { return continuation.finish() }
                    } else {
                        quickFailures = 0
                    }
                } else {
                    failedInRow.append(index)
                    messages.append("\(endpoint): \(message)")
                }
                let resume = state.withLock { $0.resume }
                logger.warning(
                    "etcd watch lost its endpoint; resuming on the next",
                    metadata: [
                        "endpoint": "\(endpoint)", "reason": "\(kind)", "error": "\(message)",
                        "key": "\(key)", "from_revision": "\(resume.map { "\($0)" } ?? "now")",
                    ])
            }
        }
    }

    /// Runs the watch on one endpoint until it fails, is cancelled or must end.
    private func attempt(_ index: Int) async -> Ending {
        let endpoint = client.endpoints[index]
        let resume = state.withLock { s in
            s.created = false
            s.suspectBackwards = false
            s.refusedProbes = 0
            s.lastActivity = .now
            return s.resume
        }
        let body: [UInt8]
        do {
            body = try EtcdClient.encode(
                WireWatchCreate(
                    create_request: .init(
                        key: WireBytes(key), range_end: rangeEnd.map(WireBytes.init),
                        start_revision: resume.map(WireInt.init), progress_notify: progressNotify, prev_kv: prevKV)), for: "/v3/watch")
        } catch {
            return .terminal(error)
        }
        let parser = WatchStreamParser(session: self, endpoint: endpoint)
        let cancel = CancelFlag()
        let started = ContinuousClock.now
        let request = client.request(url: endpoint + "/v3/watch", body: body, timeout: nil)

        enum Child: Sendable {
            case transfer(Result<HTTPResult, TransferError>)
            case monitor(Ending?)
        }
        var transferResult: Result<HTTPResult, TransferError>?
        var verdict: Ending?
        await withTaskGroup(of: Child.self) { group in
            group.addTask {
                let r = await self.client.transport.perform(request, cancel: cancel, onChunk: { parser.feed($0) })
                self.state.withLock { $0.finished = true }
                return .transfer(r)
            }
            group.addTask { .monitor(await self.monitor(index, started: started, cancel: cancel)) }
            for await child in group {
                switch child {
                case .transfer(let r): transferResult = r
                case .monitor(let v): verdict = v
                }
            }
        }
        state.withLock { $0.finished = false }
        if let verdict { return verdict }
        if let outcome = parser.outcome {
            switch outcome {
            case .unauthenticated(_, let message) where !parser.delivered:
                return .unauthenticated(message)
            case .unavailable(_, let message):
                return .memberFailed(kind: "unavailable", message: message, created: parser.delivered)
            default:
                return .terminal(outcome)
            }
        }
        let created = state.withLock { $0.created }
        switch transferResult {
        case .failure(.cancelled)?, nil:
            return .cancelled
        case .failure(let failure)?:
            return .memberFailed(kind: failure.kind, message: failure.message, created: created)
        case .success?:
            return .memberFailed(kind: "transport", message: "the server closed the watch stream", created: created)
        }
    }

    /// Watches over the transfer: the watch must be created within the endpoint timeout, a
    /// silent watch's member must pass a liveness probe, a suspected backwards revision is
    /// checked. Returns why it stopped the transfer, or nil once the transfer ended by itself.
    private func monitor(_ index: Int, started: ContinuousClock.Instant, cancel: CancelFlag) async -> Ending? {
        let configuration = client.configuration
        while true {
            do { try await Task.sleep(for: .milliseconds(200)) } catch { return nil }
            let (finished, created, lastActivity, suspect) = state.withLock {
                ($0.finished, $0.created, $0.lastActivity, $0.suspectBackwards)
            }
            if finished { return nil }
            let now = ContinuousClock.now
            if !created {
                guard now - started > configuration.endpointTimeout + configuration.connectTimeout else { continue }
                let message = "no answer to the watch request within \(configuration.endpointTimeout + configuration.connectTimeout)"
                cancel.abort(message)
                return .memberFailed(kind: "timeout", message: message, created: false)
            }
            guard suspect || now - lastActivity > configuration.watchProgressTimeout else { continue }
            if let ending = await probe(index) {
                cancel.abort("\(ending)")
                return ending
            }
        }
    }

    /// A linearizable read of the watched key on the watch's own member: it needs the quorum,
    /// so a hung member, or one cut off from the others, fails it. Returns why the watch must
    /// leave the member, or nil when it is healthy (and says so on the stream).
    private func probe(_ index: Int) async -> Ending? {
        let endpoint = client.endpoints[index]
        let body: [UInt8]
        do { body = try EtcdClient.encode(WireRangeRequest(key: WireBytes(key), count_only: true), for: "/v3/kv/range") } catch {
            return .terminal(error)
        }
        let answer: EtcdClient.Attempt<WireRangeResponse> = await client.attempt(
            index, "/v3/kv/range", body, timeout: client.configuration.endpointTimeout)
        switch answer {
        case .answer(let range):
            let revision = range.header?.revision?.value ?? 0
            let cluster = UInt64(bitPattern: range.header?.cluster_id?.value ?? 0)
            return state.withLock { s -> Ending? in
                if cluster != 0, s.clusterID != 0, cluster != s.clusterID {
                    return .terminal(.clusterChanged(endpoint: endpoint, known: s.clusterID, current: cluster))
                }
                if revision < s.highWater {
                    return .terminal(.revisionWentBackwards(endpoint: endpoint, known: s.highWater, current: revision))
                }
                s.suspectBackwards = false
                s.refusedProbes = 0
                s.highWater = max(s.highWater, revision)
                s.lastActivity = .now
                continuation.yield(
                    WatchResponse(kind: .idle, revision: revision, events: [], resumeRevision: s.resume ?? revision + 1, endpoint: endpoint)
                )
                return nil
            }
        case .memberFailed(let kind, let message):
            return .memberFailed(kind: kind, message: "liveness probe failed (\(kind)): \(message)", created: true)
        case .refused(let error):
            // The member answered but refused the probe: an expired token is renewed; a
            // member that keeps refusing cannot vouch for the watch, which moves on.
            client.logger.debug("watch liveness probe refused", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
            if case .unauthenticated = error, client.hasCredentials {
                do { try await client.authenticate() } catch {
                    client.logger.warning("cannot authenticate to etcd again", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                }
            }
            let refusals = state.withLock { s -> Int in
                s.refusedProbes += 1
                s.lastActivity = .now
                return s.refusedProbes
            }
            guard refusals >= 3 else { return nil }
            return .memberFailed(kind: "refused", message: "liveness probe refused \(refusals) times: \(error)", created: true)
        case .cancelled:
            return nil
        }
    }
}

/// What a watch has delivered, shared between its transfer thread and its monitor.
struct WatchProgress: Sendable {
    /// Where a new watch must start to miss nothing (nil: from now, until the first message).
    var resume: Int64?
    /// The highest store revision any header has shown: the store can never be below it
    /// unless it was restored.
    var highWater: Int64
    var created = false
    var finished = false
    var lastActivity = ContinuousClock.now
    /// A `created` header below ``highWater``: a lagging member, or a restore; a probe decides.
    var suspectBackwards = false
    /// The cluster ID the watch's revisions belong to (0: not known yet).
    var clusterID: UInt64 = 0
    /// Liveness probes refused in a row by the watch's member.
    var refusedProbes = 0

    init(resume: Int64?, highWater: Int64, clusterID: UInt64) {
        self.resume = resume
        self.highWater = highWater
        self.clusterID = clusterID
    }
}

/// Turns the watch's newline-delimited JSON into `WatchResponse`s as bytes arrive.
/// Used only by the thread running the transfer; read by the owner after the transfer ends.
final class WatchStreamParser: @unchecked Sendable {
    let session: WatchSession
    let endpoint: String
    private var splitter = LineSplitter()
    /// Why the stream must end, once known.
    private(set) var outcome: EtcdError?
    /// Whether anything was passed to the consumer.
    private(set) var delivered = false

    init(session: WatchSession, endpoint: String) {
        self.session = session
        self.endpoint = endpoint
    }

    /// Returns false to stop the transfer.
    func feed(_ chunk: UnsafeRawBufferPointer) -> Bool {
        do {
            try splitter.append(chunk) { line in
                if outcome == nil { handle(line) }
            }
        } catch {
            outcome = .malformedResponse(
                endpoint: endpoint, path: "/v3/watch", reason: "a watch message larger than \(LineSplitter.maxLine) bytes", snippet: "")
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
                outcome = .malformedResponse(
                    endpoint: endpoint, path: "/v3/watch", reason: "not a watch message", snippet: EtcdClient.snippet(line))
            }
            return
        }
        if let error = message.error {
            outcome = EtcdClient.classify(
                endpoint: endpoint, code: error.grpc_code ?? 0, httpStatus: error.http_code ?? 0, message: error.message ?? "")
            return
        }
        guard let result = message.result else {
            outcome = .malformedResponse(
                endpoint: endpoint, path: "/v3/watch", reason: "neither result nor error", snippet: EtcdClient.snippet(line))
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
        let revision = result.header?.revision?.value ?? 0
        if result.created == true, let raw = result.header?.cluster_id?.value, raw != 0 {
            session.client.noteCluster(result.header, endpoint: endpoint)
            let current = UInt64(bitPattern: raw)
            let known = session.state.withLock { s -> UInt64 in
                defer { s.clusterID = current }
                return s.clusterID
            }
            if known != 0, known != current {
                outcome = .clusterChanged(endpoint: endpoint, known: known, current: current)
                return
            }
        }
        let events = (result.events ?? []).map { e in
            WatchEvent(
                kind: e.type == "DELETE" ? .delete : .put, kv: e.kv?.model ?? KeyValue(key: "", value: Data()), previous: e.prev_kv?.model)
        }
        session.state.withLock { s in
            s.lastActivity = .now
            let kind: WatchResponse.Kind
            if result.created == true {
                kind = .created
                s.created = true
                if revision < s.highWater { s.suspectBackwards = true }
                if s.resume == nil { s.resume = revision + 1 }
            } else if let last = events.last {
                kind = .events
                s.resume = max(s.resume ?? 0, last.kv.modRevision + 1)
            } else {
                kind = .progress
                s.resume = max(s.resume ?? 0, revision + 1)
            }
            if !s.suspectBackwards { s.highWater = max(s.highWater, revision) }
            delivered = true
            session.continuation.yield(
                WatchResponse(
                    kind: kind, revision: revision, events: events,
                    resumeRevision: s.resume ?? revision + 1, endpoint: endpoint))
        }
    }
}
