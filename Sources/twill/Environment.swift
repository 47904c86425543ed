import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One flag that can also come from flanneld's environment (`FLANNELD_<NAME>`).
struct EnvironmentFlag: Sendable, Hashable {
    enum Kind: Sendable { case value, flag, repeatable }
    /// The long name, e.g. `etcd-endpoints`.
    let name: String
    let kind: Kind

    static func value(_ name: String) -> EnvironmentFlag { EnvironmentFlag(name: name, kind: .value) }
    static func flag(_ name: String) -> EnvironmentFlag { EnvironmentFlag(name: name, kind: .flag) }
    static func repeatable(_ name: String) -> EnvironmentFlag { EnvironmentFlag(name: name, kind: .repeatable) }

    /// `FLANNELD_` + the name upper-cased with `-` turned to `_`, as flanneld reads it.
    var variable: String { "FLANNELD_" + name.uppercased().replacing("-", with: "_") }
}

/// flanneld's conventions for flags, so existing unit files and scripts keep working:
/// - every flag can come from `FLANNELD_<NAME>` when it is not on the command line and the
///   value is not empty; the values are merged into the arguments before parsing, so one
///   validation covers flags and environment alike, and an error names the flag;
/// - Go-style `-flag=value` and `--bool-flag=true` spellings are accepted.
enum FlannelEnvironment {
    /// The environment's value for a flag, when set and not empty.
    static func value(_ flag: String, _ environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        let key = EnvironmentFlag.value(flag).variable
        guard let v = environment[key], !v.isEmpty else { return nil }
        return v
    }

    /// Boolean flags that Go lets one write as `--flag=true|false`.
    static let booleanFlags: Set<String> = ["ip-masq", "release-on-exit", "udp-accept-any-source", "version", "help"]

    /// The flags of the subcommand `arguments` starts with that take environment values.
    static func flags(forSubcommandIn arguments: [String]) -> [EnvironmentFlag] {
        guard let first = arguments.first, !first.hasPrefix("-") else { return [] }
        switch first {
        case "agent": return AgentCommand.environmentFlags
        case "network", "leases": return EtcdOptions.environmentFlags + LoggingOptions.environmentFlags
        case "cleanup": return CleanupCommand.environmentFlags
        default: return []
        }
    }

    /// `arguments` with a `--name=value` added for every flag of `flags` that is not on the
    /// command line but set in the environment. Booleans: `true`/`1` add the flag,
    /// `false`/`0` add nothing, anything else is passed on for the parser to refuse. A
    /// repeatable flag takes a comma-separated list.
    static func merge(_ arguments: [String], flags: [EnvironmentFlag], environment: [String: String] = ProcessInfo.processInfo.environment)
        -> [String]
    {
        var out = arguments
        let given = Set(
            arguments.compactMap { a -> String? in
                guard a.hasPrefix("--") else { return nil }
                return String(a.dropFirst(2).prefix { $0 != "=" })
            })
        for flag in flags where !given.contains(flag.name) {
            guard let raw = environment[flag.variable], !raw.isEmpty else { continue }
            switch flag.kind {
            case .value:
                out.append("--\(flag.name)=\(raw)")
            case .repeatable:
                for item in raw.split(separator: ",") where !item.isEmpty { out.append("--\(flag.name)=\(item)") }
            case .flag:
                switch raw.lowercased() {
                case "true", "1": out.append("--\(flag.name)")
                case "false", "0": break
                default: out.append("--\(flag.name)=\(raw)")
                }
            }
        }
        return out
    }

    /// Rewrites Go-style arguments into what the parser takes: `-name=value` -> `--name=value`
    /// (only for multi-letter names), `--bool=true` -> `--bool`, `--bool=false` -> dropped.
    static func normalise(_ arguments: [String]) -> [String] {
        var out: [String] = []
        for arg in arguments {
            var a = arg
            if a.hasPrefix("-"), !a.hasPrefix("--"), a.count > 2 {
                let name = a.dropFirst().split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
                if name.count > 1, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }),
                    name.contains("-") || booleanFlags.contains(name) || name == "iface"
                {
                    a = "-" + a
                }
            }
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                let name = String(a[a.index(a.startIndex, offsetBy: 2)..<eq])
                let value = a[a.index(after: eq)...].lowercased()
                if booleanFlags.contains(name) {
                    if value == "true" || value == "1" {
                        out.append("--" + name)
                    } else if value == "false" || value == "0" { /* the default */
                    } else {
                        out.append(a)
                    } // let the parser complain about it
                    continue
                }
            }
            out.append(a)
        }
        return out
    }
}

/// A failure while running a command (not a usage mistake): printed without the usage text.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
