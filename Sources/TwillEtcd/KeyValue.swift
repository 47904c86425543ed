#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The header etcd attaches to every answer.
public struct ResponseHeader: Sendable, Equatable {
    public var clusterID: UInt64
    public var memberID: UInt64
    /// The store's revision when the request was served.
    public var revision: Int64
    public var raftTerm: UInt64

    public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64, raftTerm: UInt64 = 0) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.revision = revision
        self.raftTerm = raftTerm
    }
}

/// One key with its value and bookkeeping, as etcd stores it.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: Data
    /// Revision of the last creation of this key.
    public var createRevision: Int64
    /// Revision of the last modification.
    public var modRevision: Int64
    /// Number of writes since creation (1 after create).
    public var version: Int64
    /// The etcd lease the key is attached to; 0 when it has none (the key never expires).
    public var lease: Int64

    public init(key: String, value: Data, createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The value as UTF-8 text.
    public var valueString: String { String(decoding: value, as: UTF8.self) }
}

/// The answer to a range (get or list).
public struct RangeResult: Sendable, Equatable {
    public var header: ResponseHeader
    public var kvs: [KeyValue]
    /// How many keys matched (may exceed `kvs.count` when a limit was set).
    public var count: Int64
    public var more: Bool

    public init(header: ResponseHeader, kvs: [KeyValue], count: Int64, more: Bool = false) {
        self.header = header
        self.kvs = kvs
        self.count = count
        self.more = more
    }
}

/// The range end that selects every key starting with `prefix`: the prefix with its last
/// byte incremented (trailing 0xff bytes dropped first); all keys when that leaves nothing.
public func prefixRangeEnd(_ prefix: String) -> [UInt8] {
    var bytes = Array(prefix.utf8)
    while let last = bytes.last {
        if last < 0xff {
            bytes[bytes.count - 1] = last + 1
            return bytes
        }
        bytes.removeLast()
    }
    return [0]
}
