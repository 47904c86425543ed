import Foundation

/// flanneld's conventions for flags, so existing unit files and scripts keep working:
/// every flag can come from `FLANNELD_<NAME>` (upper case, `-` -> `_`) when it is not on the
/// command line and the value is not empty; Go-style `-flag=value` and `--bool-flag=true`
/// spellings are accepted.
enum FlannelEnvironment {
    /// The environment's value for a flag, when set and not empty.
    static func value(_ flag: String, _ environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        let key = "FLANNELD_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
        guard let v = environment[key], !v.isEmpty else { return nil }
        return v
    }

    /// Boolean flags that Go lets one write as `--flag=true|false`.
    static let booleanFlags: Set<String> = ["ip-masq", "release-on-exit", "udp-accept-any-source", "version", "help"]

    /// Rewrites Go-style arguments into what the parser takes: `-name=value` -> `--name=value`
    /// (only for multi-letter names), `--bool=true` -> `--bool`, `--bool=false` -> dropped.
    static func normalise(_ arguments: [String]) -> [String] {
        var out: [String] = []
        for arg in arguments {
            var a = arg
            if a.hasPrefix("-"), !a.hasPrefix("--"), a.count > 2 {
                let name = a.dropFirst().split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
                if name.count > 1, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }), name.contains("-") || booleanFlags.contains(name) || name == "iface" {
                    a = "-" + a
                }
            }
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                let name = String(a[a.index(a.startIndex, offsetBy: 2)..<eq])
                let value = a[a.index(after: eq)...].lowercased()
                if booleanFlags.contains(name) {
                    if value == "true" || value == "1" { out.append("--" + name) }
                    else if value == "false" || value == "0" { /* the default */ }
                    else { out.append(a) }  // let the parser complain about it
                    continue
                }
            }
            out.append(a)
        }
        return out
    }

    /// A boolean from the environment ("true"/"1"/"false"/"0"); nil when unset.
    static func bool(_ flag: String) -> Bool? {
        guard let v = value(flag)?.lowercased() else { return nil }
        return v == "true" || v == "1"
    }
}

/// A failure while running a command (not a usage mistake): printed without the usage text.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
