import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// flannel's private key file (`/run/flannel/wgkey`, or `WIREGUARD_KEY_FILE`): the key in
/// base64 (as `wg genkey` writes it), mode 0400, generated when missing and kept across
/// restarts so that the node's lease keeps its public key.
public enum WireGuardKeyFile {
    public static let defaultPath = "/run/flannel/wgkey"

    /// The key at `path`; when there is no file, a new key written there first. A file that
    /// is there but holds no key is an error, never overwritten (it may be an operator's).
    ///
    /// - Returns: the key, and whether it was generated now.
    public static func loadOrCreate(_ path: String) throws(WireGuardError) -> (key: Secret, created: Bool) {
        let contents: [UInt8]?
        do { contents = try Files.read(path) } catch {
            throw WireGuardError("cannot read the wireguard private key file \(path): \(error)")
        }
        if var contents {
            defer { for i in contents.indices { contents[i] = 0 } }
            return (try parse(contents, path: path), false)
        }
        let key = WireGuardCrypto.generatePrivateKey()
        var text = Array(key.withBytes { Data($0) }.base64EncodedString().utf8)
        defer { for i in text.indices { text[i] = 0 } }
        do {
            try AtomicFile.write(text, to: path, mode: 0o400, directoryMode: 0o755)
        } catch {
            throw WireGuardError("cannot write a new wireguard private key to \(path): \(error)")
        }
        return (key, true)
    }

    /// A key in base64 (as `wg` prints them, surrounding whitespace allowed): its 32 bytes, or nil.
    public static func decodeKey(_ text: String) -> [UInt8]? {
        guard let data = Data(base64Encoded: text.trimmingWhitespace()), data.count == 32 else { return nil }
        return Array(data)
    }

    /// A base64 private key (surrounding whitespace allowed), 32 bytes once decoded.
    static func parse(_ contents: [UInt8], path: String) throws(WireGuardError) -> Secret {
        guard var bytes = decodeKey(String(decoding: contents, as: UTF8.self)) else {
            throw WireGuardError(
                "the wireguard private key file \(path) does not hold a key (base64 of 32 bytes, as `wg genkey` prints); "
                    + "fix it, or remove it to have a new key generated")
        }
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return Secret(bytes)
    }
}

/// A wireguard lease's `BackendData`: `{"PublicKey":"<base64>","Port":<ListenPort>}`, as flannel
/// writes it (Port since flannel v0.26.6; 0 or absent means the reader's own ListenPort).
public struct WireGuardLeaseData: Sendable, Equatable {
    public var publicKey: [UInt8]
    public var port: UInt16?

    public init(publicKey: [UInt8], port: UInt16?) {
        self.publicKey = publicKey
        self.port = port
    }

    /// The JSON flannel writes, byte for byte.
    public var json: Data {
        var s = "{\"PublicKey\":\"\(Data(publicKey).base64EncodedString())\""
        if let port { s += ",\"Port\":\(port)" }
        return Data((s + "}").utf8)
    }

    /// Why a peer's BackendData cannot be used.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    private struct Wire: Decodable {
        var PublicKey: String
        var Port: Int?
    }

    /// Parses a peer's BackendData; the error says what is wrong with it.
    public init(parsing raw: Data) throws(Invalid) {
        let wire: Wire
        do { wire = try JSONDecoder().decode(Wire.self, from: raw) } catch {
            throw Invalid(description: "BackendData is not {\"PublicKey\": \"<base64>\", \"Port\": <number>}: \(error)")
        }
        guard let key = WireGuardKeyFile.decodeKey(wire.PublicKey) else {
            throw Invalid(description: "PublicKey \"\(wire.PublicKey.prefix(60))\" is not base64 of 32 bytes")
        }
        if let p = wire.Port, !(0...65535).contains(p) {
            throw Invalid(description: "Port \(p) is outside 0..65535")
        }
        publicKey = Array(key)
        port = wire.Port.flatMap { $0 == 0 ? nil : UInt16($0) }
    }
}
