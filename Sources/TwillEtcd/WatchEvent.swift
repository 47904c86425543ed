/// One change seen by a watch.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case put = "PUT"
        case delete = "DELETE"
    }
    public var kind: Kind
    /// The key after the change; for a delete, the key with an empty value and `modRevision`
    /// the revision of the delete.
    public var kv: KeyValue
    /// The key before the change, when the watch asked for it.
    public var previous: KeyValue?

    public init(kind: Kind, kv: KeyValue, previous: KeyValue? = nil) {
        self.kind = kind
        self.kv = kv
        self.previous = previous
    }
}

/// One message of a watch stream.
public struct WatchResponse: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The watch was set up (on a member; again after each failover).
        case created
        /// Events of one or more revisions.
        case events
        /// etcd's progress notification: everything up to ``WatchResponse/revision`` has been
        /// delivered.
        case progress
        /// The client's own liveness probe found the watch's member healthy; nothing new.
        case idle
    }
    public var kind: Kind
    /// The store revision in the message's header.
    public var revision: Int64
    public var events: [WatchEvent]
    /// The revision a new watch would start from to miss nothing delivered so far: the last
    /// event's mod_revision + 1, or a progress notification's revision + 1. Resume from it
    /// after the stream throws.
    public var resumeRevision: Int64
    /// The endpoint that sent it.
    public var endpoint: String

    /// True for a `created` message.
    public var created: Bool { kind == .created }

    public init(kind: Kind, revision: Int64, events: [WatchEvent], resumeRevision: Int64, endpoint: String) {
        self.kind = kind
        self.revision = revision
        self.events = events
        self.resumeRevision = resumeRevision
        self.endpoint = endpoint
    }
}
