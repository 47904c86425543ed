/// One change seen by a watch.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable { case put = "PUT", delete = "DELETE" }
    public var kind: Kind
    /// The key after the change; for a delete, the key with an empty value and `modRevision`
    /// the revision of the delete.
    public var kv: KeyValue
    /// The key before the change, when the watch asked for it.
    public var previous: KeyValue?
}

/// One message of a watch stream: the events of one or more revisions, or, with no events,
/// a creation or progress notification that only advances the known revision.
public struct WatchResponse: Sendable, Equatable {
    /// The store revision this message speaks for; everything up to it has been delivered.
    public var revision: Int64
    public var events: [WatchEvent]
    /// True for the first message, sent when the watch is set up.
    public var created: Bool
}
