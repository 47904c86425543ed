/// flanneld's command line, as Go's flag package reads it, mapped onto `twill agent`.
///
/// The binary invoked as `flanneld` (a symlink) takes flanneld v0.28's command line
/// unchanged: every flag, with Go's spellings (`-flag`, `--flag`, `-flag=value`,
/// `-flag value`; booleans `-flag` or `-flag=false`, never `-flag false`), the three klog
/// flags flanneld copies (`-v`, `-vmodule`, `-log_backtrace_at`), and `FLANNELD_<NAME>` for
/// every flag not given. An unknown flag is refused as flanneld refuses it (`flag provided
/// but not defined: -x`, exit 2); Kubernetes-only flags get a clear "not supported: use etcd"
/// (exit 1). Twill's own agent flags are accepted too. Values are then checked by the agent's
/// own parser, so a bad value reads the same whichever way it came.
enum FlanneldCommandLine {
    enum Kind: Sendable { case bool, string, int, list }

    /// One flag: its name, kind, default (for the usage text) and what it becomes.
    struct Flag: Sendable {
        enum Role: Sendable {
            /// Passed to `twill agent` as `--<agentName>`.
            case agent(String)
            /// `-v`: klog verbosity, turned into `--log-level`.
            case verbosity
            /// Accepted and not used (klog's vmodule and log_backtrace_at).
            case ignored
            /// Kubernetes subnet manager: refused.
            case kubernetes
            case version
        }
        let name: String
        let kind: Kind
        let defaultValue: String
        let usage: String
        let role: Role
    }

    static func agent(_ name: String, _ kind: Kind, _ defaultValue: String = "", _ usage: String) -> Flag {
        Flag(name: name, kind: kind, defaultValue: defaultValue, usage: usage, role: .agent(name))
    }

    /// flanneld v0.28's flags.
    static let flanneldFlags: [Flag] = [
        agent("etcd-endpoints", .string, "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints"),
        agent("etcd-prefix", .string, "/coreos.com/network", "etcd prefix"),
        agent("etcd-keyfile", .string, "", "SSL key file used to secure etcd communication"),
        agent("etcd-certfile", .string, "", "SSL certification file used to secure etcd communication"),
        agent("etcd-cafile", .string, "", "SSL Certificate Authority file used to secure etcd communication"),
        agent("etcd-username", .string, "", "username for BasicAuth to etcd"),
        agent("etcd-password", .string, "", "password for BasicAuth to etcd"),
        agent(
            "iface", .list, "",
            "interface to use (IP or name) for inter-host communication. Can be specified multiple times to check each option in order. Returns the first match found."
        ),
        agent(
            "iface-regex", .list, "",
            "regex expression to match the first interface to use (IP or name) for inter-host communication. Can be specified multiple times to check each regex in order. Returns the first match found. Regexes are checked after specific interfaces specified by the iface option have already been checked."
        ),
        agent(
            "iface-can-reach", .string, "",
            "detect interface to use (IP or name) for inter-host communication based on which will be used for provided IP. This is exactly the interface to use of command 'ip route get <ip-address>'"
        ),
        agent("public-ip", .string, "", "IP accessible by other nodes for inter-host communication"),
        agent("public-ipv6", .string, "", "IPv6 accessible by other nodes for inter-host communication"),
        agent("subnet-file", .string, "/run/flannel/subnet.env", "filename where env variables (subnet, MTU, ... ) will be written to"),
        agent("subnet-lease-renew-margin", .int, "60", "subnet lease renewal margin, in minutes, ranging from 1 to 1439"),
        agent("ip-masq", .bool, "false", "setup IP masquerade rule for traffic destined outside of overlay network"),
        agent("ip-masq-fully-random-disable", .bool, "false", "disable fully random source port allocation for IP masquerade rules"),
        agent("ip-blackhole-route", .bool, "false", "setup a blackhole route for the node's own subnet"),
        agent("healthz-ip", .string, "0.0.0.0", "the IP address for healthz server to listen"),
        agent("healthz-port", .int, "0", "the port for healthz server to listen(0 to disable)"),
        agent("iptables-resync", .int, "5", "resync period for iptables rules, in seconds"),
        agent("iptables-forward-rules", .bool, "true", "add default accept rules to FORWARD chain in iptables"),
        Flag(name: "version", kind: .bool, defaultValue: "false", usage: "print version and exit", role: .version),
        Flag(
            name: "kube-subnet-mgr", kind: .bool, defaultValue: "false",
            usage: "contact the Kubernetes API for subnet assignment instead of etcd", role: .kubernetes),
        Flag(
            name: "kube-api-url", kind: .string, defaultValue: "",
            usage: "Kubernetes API server URL. Does not need to be specified if flannel is running in a pod.", role: .kubernetes),
        Flag(
            name: "kube-annotation-prefix", kind: .string, defaultValue: "flannel.alpha.coreos.com",
            usage: "Kubernetes annotation prefix. Can contain single slash \"/\", otherwise it will be appended at the end.",
            role: .kubernetes),
        Flag(
            name: "kubeconfig-file", kind: .string, defaultValue: "",
            usage: "kubeconfig file location. Does not need to be specified if flannel is running in a pod.", role: .kubernetes),
        Flag(
            name: "net-config-path", kind: .string, defaultValue: "/etc/kube-flannel/net-conf.json",
            usage: "path to the network configuration file", role: .kubernetes),
        Flag(
            name: "set-node-network-unavailable", kind: .bool, defaultValue: "true", usage: "set NodeNetworkUnavailable after ready",
            role: .kubernetes),
        Flag(name: "v", kind: .int, defaultValue: "0", usage: "number for the log level verbosity", role: .verbosity),
        Flag(
            name: "vmodule", kind: .string, defaultValue: "", usage: "comma-separated list of pattern=N settings for file-filtered logging",
            role: .ignored),
        Flag(
            name: "log_backtrace_at", kind: .string, defaultValue: ":0", usage: "when logging hits line file:N, emit a stack trace",
            role: .ignored),
    ]

    /// flanneld's flags, then Twill's own agent flags that flanneld does not have.
    static let flags: [Flag] = {
        let known = Set(flanneldFlags.map(\.name))
        let twill = AgentCommand.environmentFlags.filter { !known.contains($0.name) }.map { f -> Flag in
            let kind: Kind =
                switch f.kind {
                case .value: .string
                case .flag: .bool
                case .repeatable: .list
                }
            return Flag(name: f.name, kind: kind, defaultValue: "", usage: "Twill: see `twill agent --help`", role: .agent(f.name))
        }
        return flanneldFlags + twill
    }()

    enum Outcome: Equatable {
        /// Run `twill agent` with these arguments.
        case run([String])
        /// Print this (the version, the usage) to the stream and exit with the status.
        case exit(status: Int32, stdout: String, stderr: String)
    }

    /// Parses `arguments` (after argv[0]) and the environment, as flanneld would.
    static func parse(_ arguments: [String], environment: [String: String], version: String) -> Outcome {
        var values: [String: [String]] = [:]
        var index = 0
        func failure(_ message: String) -> Outcome { .exit(status: 2, stdout: "", stderr: message + "\n" + usage()) }
        while index < arguments.count {
            let arg = arguments[index]
            // Go's flag package stops at the first non-flag argument or at "--".
            if arg == "--" {
                index += 1
                break
            }
            guard arg.hasPrefix("-"), arg != "-" else { break }
            let body = arg.hasPrefix("--") ? arg.dropFirst(2) : arg.dropFirst()
            guard !body.isEmpty, !body.hasPrefix("-"), !body.hasPrefix("=") else { return failure("bad flag syntax: \(arg)") }
            let parts = body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            var value = parts.count == 2 ? String(parts[1]) : nil
            guard let flag = flags.first(where: { $0.name == name }) else {
                if name == "h" || name == "help" { return .exit(status: 0, stdout: "", stderr: usage()) }
                return failure("flag provided but not defined: -\(name)")
            }
            index += 1
            if flag.kind == .bool {
                value = value ?? "true"
            } else if value == nil {
                guard index < arguments.count else { return failure("flag needs an argument: -\(name)") }
                value = arguments[index]
                index += 1
            }
            do throws(FlagError) {
                values[name, default: []] += try check(flag, value!, source: "-\(name)")
            } catch {
                return failure(error.message)
            }
        }
        // FLANNELD_<NAME> for every flag not on the command line (flanneld's flagutil).
        for flag in flags where values[flag.name] == nil {
            let variable = "FLANNELD_" + flag.name.uppercased().replacing("-", with: "_")
            guard let raw = environment[variable], !raw.isEmpty else { continue }
            do throws(FlagError) {
                values[flag.name] = try check(flag, raw, source: "\(variable) (flag -\(flag.name))")
            } catch {
                return .exit(status: 1, stdout: "", stderr: error.message + "\n")
            }
        }
        if let v = values["version"]?.last, v == "true" { return .exit(status: 0, stdout: "", stderr: version + "\n") }
        for flag in flags where flag.role.isKubernetes {
            guard let given = values[flag.name]?.last, given != flag.defaultValue else { continue }
            return .exit(
                status: 1, stdout: "",
                stderr: """
                    -\(flag.name) is not supported: Twill keeps subnet leases in etcd, not in the Kubernetes API. \
                    Run it with -etcd-endpoints (see docs/migrating-from-flanneld.md).

                    """)
        }
        var out: [String] = []
        for flag in flags {
            guard let given = values[flag.name] else { continue }
            switch flag.role {
            case .agent(let agentName):
                switch flag.kind {
                case .bool:
                    let on = given.last == "true"
                    if agentName == "iptables-forward-rules" {
                        out.append("--\(agentName)=\(on)")
                    } else if on {
                        out.append("--\(agentName)")
                    }
                case .list:
                    out += given.map { "--\(agentName)=\($0)" }
                case .string, .int:
                    out.append("--\(agentName)=\(given.last!)")
                }
            case .verbosity:
                out.append("--log-level=\(logLevel(verbosity: Int(given.last!) ?? 0))")
            case .ignored, .kubernetes, .version:
                break
            }
        }
        return .run(out)
    }

    struct FlagError: Error { let message: String }

    /// A value as Go's flag package takes it for `flag`: booleans by strconv.ParseBool, ints
    /// by strconv.ParseInt(s, 0, 64), lists comma-free values each.
    static func check(_ flag: Flag, _ value: String, source: String) throws(FlagError) -> [String] {
        switch flag.kind {
        case .bool:
            switch value {
            case "1", "t", "T", "TRUE", "true", "True": return ["true"]
            case "0", "f", "F", "FALSE", "false", "False": return ["false"]
            default: throw FlagError(message: "invalid boolean value \"\(value)\" for \(source): parse error")
            }
        case .int:
            guard let n = goInt(value) else { throw FlagError(message: "invalid value \"\(value)\" for flag \(source): parse error") }
            return ["\(n)"]
        case .string:
            return [value]
        case .list:
            return [value]
        }
    }

    /// strconv.ParseInt(s, 0, 64): an optional sign, then decimal, 0x hex, 0o or 0 octal, 0b binary.
    static func goInt(_ text: String) -> Int64? {
        var s = Substring(text)
        var negative = false
        if s.first == "+" || s.first == "-" {
            negative = s.first == "-"
            s = s.dropFirst()
        }
        var radix = 10
        let lower = s.lowercased()
        if lower.hasPrefix("0x") {
            radix = 16
            s = s.dropFirst(2)
        } else if lower.hasPrefix("0b") {
            radix = 2
            s = s.dropFirst(2)
        } else if lower.hasPrefix("0o") {
            radix = 8
            s = s.dropFirst(2)
        } else if s.count > 1, s.first == "0" {
            radix = 8
            s = s.dropFirst()
        }
        guard !s.isEmpty, let magnitude = Int64(s.replacing("_", with: ""), radix: radix) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// klog verbosity to a log level: 0-2 info (flanneld's -v=2 is its everyday setting),
    /// 3-5 debug, 6 and above trace.
    static func logLevel(verbosity: Int) -> String {
        switch verbosity {
        case ..<3: "info"
        case 3...5: "debug"
        default: "trace"
        }
    }

    /// Go's flag.PrintDefaults, for flanneld's flags.
    static func usage() -> String {
        var text = "Usage of flanneld:\n"
        for flag in flanneldFlags.sorted(by: { $0.name < $1.name }) {
            let type: String =
                switch flag.kind {
                case .bool: ""
                case .int: " int"
                case .string: " string"
                case .list: " value"
                }
            text += "  -\(flag.name)\(type)\n    \t\(flag.usage)"
            if !flag.defaultValue.isEmpty, flag.defaultValue != "false" {
                text += flag.kind == .string ? " (default \"\(flag.defaultValue)\")" : " (default \(flag.defaultValue))"
            }
            text += "\n"
        }
        text += "Twill's own agent flags are accepted too: see `twill agent --help`.\n"
        return text
    }
}

extension FlanneldCommandLine.Flag.Role {
    var isKubernetes: Bool { if case .kubernetes = self { true } else { false } }
}
