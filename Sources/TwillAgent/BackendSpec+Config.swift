import TwillDatapath
import TwillLease

extension BackendSpec {
    /// The `Backend` object of a network config.
    public init(_ config: NetworkConfig) {
        var settings: [String: Setting] = [:]
        if case .object(let members) = config.backend {
            for (key, value) in members where key.lowercased() != "type" {
                switch value {
                case .number(let n): settings[key] = .number(n)
                case .bool(let b): settings[key] = .bool(b)
                case .string(let s): settings[key] = .string(s)
                default: settings[key] = .other(kind: value.kindName)
                }
            }
        }
        self.init(type: config.backendType, settings: settings)
    }
}
