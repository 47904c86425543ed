#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One condition of a transaction.
public struct Compare: Sendable, Equatable {
    /// What of the key is compared, with the value to compare against.
    public enum Target: Sendable, Equatable {
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
        case value(Data)
        case lease(Int64)
    }
    public enum Result: String, Sendable, Equatable {
        case equal = "EQUAL"
        case greater = "GREATER"
        case less = "LESS"
        case notEqual = "NOT_EQUAL"
    }
    public var key: String
    public var target: Target
    public var result: Result

    public init(key: String, _ target: Target, _ result: Result = .equal) {
        self.key = key
        self.target = target
        self.result = result
    }

    /// True when `key` does not exist (a missing key compares as all zeros).
    public static func absent(_ key: String) -> Compare { Compare(key: key, .createRevision(0), .equal) }
    /// True when `key` was last modified at `revision` (compare-and-swap).
    public static func unchanged(_ key: String, modRevision: Int64) -> Compare {
        Compare(key: key, .modRevision(modRevision), .equal)
    }
}

/// One operation inside a transaction branch.
public enum RequestOp: Sendable, Equatable {
    case put(key: String, value: Data, lease: Int64 = 0)
    case get(key: String)
    case list(prefix: String)
    case delete(key: String)
}

/// The outcome of one operation of the branch that ran.
public enum ResponseOp: Sendable, Equatable {
    case put
    case range(RangeResult)
    case delete(deleted: Int64)
}

/// The answer to a transaction.
public struct TxnResult: Sendable, Equatable {
    public var header: ResponseHeader
    /// Whether every compare held (so the success branch ran).
    public var succeeded: Bool
    public var responses: [ResponseOp]

    public init(header: ResponseHeader, succeeded: Bool, responses: [ResponseOp]) {
        self.header = header
        self.succeeded = succeeded
        self.responses = responses
    }
}
