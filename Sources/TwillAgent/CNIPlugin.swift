import TwillAddress
import TwillLease
import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A CNI plugin that does what flannel's does: reads subnet.env, builds a delegate config
/// (bridge + host-local by default), saves it for DEL, and runs the delegate plugin.
public struct CNIPlugin: Sendable {
    /// A CNI error, reported as CNI's JSON error object on stdout.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var code: Int
        public var message: String
        public var details: String
        public init(code: Int = 999, _ message: String, details: String = "") {
            self.code = code
            self.message = message
            self.details = details
        }
        public var description: String { details.isEmpty ? message : "\(message): \(details)" }

        public func json(cniVersion: String) -> String {
            let obj: JSONValue = .object([
                "cniVersion": .string(cniVersion), "code": .number(Double(code)), "msg": .string(message), "details": .string(details),
            ])
            return String(decoding: obj.encoded(), as: UTF8.self)
        }
    }

    public static let supportedVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    public static let defaultDataDir = "/var/lib/cni/flannel"

    /// The plugin's own config (the network config CNI hands over on stdin).
    public struct Config: Sendable {
        public var raw: [String: JSONValue]
        public var cniVersion: String
        public var name: String
        public var subnetFile: String
        public var dataDir: String
        public var delegate: [String: JSONValue]

        public init(json: Data) throws(Failure) {
            guard let v = try? JSONValue.parse(json), case .object(let o) = v else {
                throw Failure(code: 6, "failed to parse network configuration", details: String(decoding: json.prefix(200), as: UTF8.self))
            }
            raw = o
            cniVersion = o["cniVersion"]?.stringValue ?? "0.3.1"
            guard let n = o["name"]?.stringValue, !n.isEmpty else { throw Failure(code: 6, "network configuration has no name") }
            name = n
            subnetFile = o["subnetFile"]?.stringValue ?? SubnetEnv.defaultPath
            dataDir = o["dataDir"]?.stringValue ?? CNIPlugin.defaultDataDir
            if let d = o["delegate"] {
                guard case .object(let dd) = d else { throw Failure(code: 6, "delegate must be an object") }
                delegate = dd
            } else {
                delegate = [:]
            }
        }
    }

    /// The delegate's config for this node, as flannel builds it.
    public static func delegateConfig(_ config: Config, env: SubnetEnv) throws(Failure) -> [String: JSONValue] {
        let v4 = env.subnet.flatMap { s in env.network.map { (s, $0) } }
        let v6 = env.ipv6Subnet.flatMap { s in env.ipv6Network.map { (s, $0) } }
        guard v4 != nil || v6 != nil, env.mtu > 0 else {
            throw Failure(
                code: 11, "subnet file \(config.subnetFile) lacks FLANNEL_SUBNET and FLANNEL_NETWORK (or their IPv6 pair) or FLANNEL_MTU")
        }
        var d = config.delegate
        if d["type"] == nil { d["type"] = .string("bridge") }
        if d["ipMasq"] == nil { d["ipMasq"] = .bool(!env.ipMasq) }
        if d["mtu"] == nil { d["mtu"] = .number(Double(env.mtu)) }
        if d["type"]?.stringValue == "bridge", d["isGateway"] == nil { d["isGateway"] = .bool(true) }
        var ipam: [String: JSONValue] = [:]
        if case .object(let existing)? = d["ipam"] { ipam = existing }
        if ipam["type"] == nil { ipam["type"] = .string("host-local") }
        // One range list per family, IPv4 first, and a route to each overlay (flannel's).
        var ranges: [JSONValue] = []
        var routes: [JSONValue] = []
        if let (subnet, network) = v4 {
            ranges.append(.array([.object(["subnet": .string("\(subnet)")])]))
            routes.append(.object(["dst": .string("\(network)")]))
        }
        if let (subnet6, network6) = v6 {
            let net6 = (try? IPv6Network(containing: subnet6.address, prefixLength: subnet6.prefixLength)) ?? subnet6
            ranges.append(.array([.object(["subnet": .string("\(net6)")])]))
            routes.append(.object(["dst": .string("\(network6)")]))
        }
        ipam["ranges"] = .array(ranges)
        if ipam["routes"] == nil { ipam["routes"] = .array(routes) }
        d["ipam"] = .object(ipam)
        d["name"] = .string(config.name)
        d["cniVersion"] = .string(config.cniVersion)
        return d
    }

    public let environment: [String: String]
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    /// Runs one CNI command; returns what goes to stdout.
    public func run(stdin: Data) throws(Failure) -> Data {
        guard let command = environment["CNI_COMMAND"], !command.isEmpty else {
            throw Failure(code: 4, "CNI_COMMAND is not set: this is a CNI plugin, run by the container runtime")
        }
        if command == "VERSION" {
            let obj: JSONValue = .object([
                "cniVersion": .string("1.0.0"), "supportedVersions": .array(Self.supportedVersions.map(JSONValue.string)),
            ])
            return obj.encoded()
        }
        let config = try Config(json: stdin)
        guard let containerID = environment["CNI_CONTAINERID"], !containerID.isEmpty,
            !containerID.contains("/"), containerID != "..", containerID != "."
        else {
            throw Failure(code: 4, "CNI_CONTAINERID is missing or not a plain identifier")
        }
        let saved = config.dataDir + "/" + containerID
        switch command {
        case "ADD":
            let env: SubnetEnv
            do {
                guard let e = try SubnetEnv.read(path: config.subnetFile, requireComplete: true) else {
                    throw Failure(code: 11, "subnet file \(config.subnetFile) does not exist (is the Twill agent running?)")
                }
                env = e
            } catch let f as Failure { throw f } catch { throw Failure(code: 11, "\(error)") }
            let delegate = try Self.delegateConfig(config, env: env)
            let bytes = JSONValue.object(delegate).encoded()
            try save(bytes, to: saved, dir: config.dataDir)
            do {
                return try invoke(delegate, bytes: bytes)
            } catch {
                try? FileManager.default.removeItem(atPath: saved)
                throw error
            }
        case "DEL":
            // A missing file means ADD never completed (or DEL already ran): nothing to undo.
            guard let bytes = FileManager.default.contents(atPath: saved) else { return Data() }
            guard let v = try? JSONValue.parse(bytes), case .object(let delegate) = v else {
                try? FileManager.default.removeItem(atPath: saved)
                return Data()
            }
            _ = try invoke(delegate, bytes: bytes)
            try? FileManager.default.removeItem(atPath: saved)
            return Data()
        case "CHECK":
            guard let bytes = FileManager.default.contents(atPath: saved),
                let v = try? JSONValue.parse(bytes), case .object(var delegate) = v
            else {
                throw Failure(code: 11, "no saved configuration for container \(containerID) in \(config.dataDir)")
            }
            // The runtime hands CHECK the ADD result as prevResult; the delegate needs it too.
            if let prev = config.raw["prevResult"] { delegate["prevResult"] = prev }
            return try invoke(delegate, bytes: JSONValue.object(delegate).encoded())
        default:
            throw Failure(code: 4, "unknown CNI_COMMAND \(command)")
        }
    }

    func save(_ bytes: Data, to path: String, dir: String) throws(Failure) {
        do {
            try AtomicFile.makeDirectories(dir, mode: 0o700)
            try AtomicFile.write(bytes, to: path, mode: 0o600, directoryMode: nil)
        } catch {
            throw Failure(code: 11, "cannot save delegate config in \(dir)", details: "\(error)")
        }
    }

    /// Runs the delegate plugin found in CNI_PATH with the same CNI environment.
    func invoke(_ delegate: [String: JSONValue], bytes: Data) throws(Failure) -> Data {
        guard let type = delegate["type"]?.stringValue, !type.isEmpty, !type.contains("/") else {
            throw Failure(code: 6, "delegate has no valid type")
        }
        let dirs = (environment["CNI_PATH"] ?? "").split(separator: ":").map(String.init)
        guard let path = dirs.map({ $0 + "/" + type }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Failure(code: 11, "delegate plugin \(type) not found in CNI_PATH \(environment["CNI_PATH"] ?? "(unset)")")
        }
        let outcome: Subprocess.Outcome
        do { outcome = try Subprocess.run(path, [], environment: environment, input: Array(bytes)) } catch {
            throw Failure(code: 11, "cannot run \(path)", details: "\(error)")
        }
        // The delegate's diagnostics belong to the runtime's log, as if it had been run directly.
        if !outcome.standardError.isEmpty { try? Syscall.writeAll(2, outcome.standardError, operation: "write stderr") }
        let out = Data(outcome.standardOutput)
        guard outcome.succeeded else {
            // Pass the delegate's own CNI error through when it gave one.
            if let v = try? JSONValue.parse(out), let msg = v[caseInsensitive: "msg"]?.stringValue {
                throw Failure(
                    code: v[caseInsensitive: "code"]?.intValue ?? 999, "delegate \(type): \(msg)",
                    details: v[caseInsensitive: "details"]?.stringValue ?? "")
            }
            throw Failure(
                code: 999, "delegate \(type) failed (\(outcome.summary))", details: String(decoding: out.prefix(500), as: UTF8.self))
        }
        return out
    }
}
