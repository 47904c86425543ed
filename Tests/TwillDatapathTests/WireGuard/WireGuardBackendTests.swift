import Testing
import TwillAddress
import TwillSystem

@testable import TwillDatapath

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The wireguard backend's formats and settings: flannel's lease JSON, key file and config keys.
@Suite struct WireGuardBackendTests {
    init() throws { try WireGuardCrypto.load() }

    static func message(_ settings: [String: BackendSpec.Setting]) -> String? {
        do {
            try BackendRegistry.validate(BackendSpec(type: "wireguard", settings: settings))
            return nil
        } catch {
            return error.description
        }
    }

    @Test func settingsAreFlannelsWithClearErrors() throws {
        #expect(Self.message([:]) == nil)
        #expect(
            Self.message([
                "ListenPort": .number(51999), "PersistentKeepaliveInterval": .number(25), "Mode": .string("auto"),
                "PSK": .string("ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleTEyMzQ="), "MTU": .number(1400),
            ]) == nil)
        #expect(Self.message(["ListenPort": .number(70000)]) == "wireguard backend: Backend.ListenPort 70000 is outside 1..65535")
        #expect(Self.message(["PSK": .string("not base64!")])?.contains("Backend.PSK must be base64 of 32 bytes") == true)
        #expect(Self.message(["PSK": .string("c2hvcnQ=")])?.contains("Backend.PSK") == true)
        #expect(
            Self.message(["Mode": .string("bridge")])
                == "wireguard backend: Backend.Mode \"bridge\" is not one of separate, auto, ipv4, ipv6")
        #expect(Self.message(["Mode": .string("ipv6")])?.contains("IPv6") == true)
        #expect(Self.message(["PersistentKeepaliveInterval": .string("25s")])?.contains("whole number") == true)
        let external = ExternalInterface(
            name: "lo", index: 1, publicIP: IPv4Address("198.51.100.1")!, localIP: IPv4Address("198.51.100.1")!, mtu: 1500)
        let backend = try BackendRegistry.make(
            BackendSpec(type: "wireguard", settings: ["ListenPort": .number(51999), "MTU": .number(1450)]),
            external: external, options: .init(wireGuardKeyFile: "/nonexistent/wgkey"))
        let wg = try #require(backend as? WireGuardBackend)
        #expect(wg.listenPort == 51999 && wg.mtu == 1370 && wg.keyFile == "/nonexistent/wgkey" && wg.type == "wireguard")
    }

    @Test func peersComeFromUsableLeasesOnly() throws {
        let external = ExternalInterface(
            name: "lo", index: 1, publicIP: IPv4Address("198.51.100.1")!, localIP: IPv4Address("198.51.100.1")!, mtu: 1500)
        let wg = try #require(
            try BackendRegistry.make(
                BackendSpec(type: "wireguard", settings: ["PersistentKeepaliveInterval": .number(25)]),
                external: external) as? WireGuardBackend)
        let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
        func lease(_ type: String?, _ data: String?) -> PeerLease {
            PeerLease(
                subnet: IPv4Network("198.18.2.0/24")!, publicIP: IPv4Address("198.51.100.2")!, backendType: type,
                backendData: data.map { Data($0.utf8) })
        }
        let config = try #require(wg.peerConfig(lease("wireguard", #"{"PublicKey":"\#(key)","Port":51999}"#)))
        #expect(config.endpoint == WireGuardEndpoint(address: IPv4Address("198.51.100.2")!, port: 51999))
        #expect(config.allowedIPs == IPv4Network("198.18.2.0/24")! && config.persistentKeepalive == .seconds(25))
        #expect(wg.peerConfig(lease("wireguard", #"{"PublicKey":"\#(key)"}"#))?.endpoint.port == 51820)
        // Not ours, or nothing usable: skipped (and logged), never a crash.
        for (type, data) in [
            ("vxlan", #"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#), (nil, nil), ("wireguard", nil), ("wireguard", "{"),
            ("wireguard", #"{"PublicKey":"AAAA"}"#), ("wireguard", #"{"PublicKey":"\#(key)","Port":-1}"#),
        ] as [(String?, String?)] {
            #expect(wg.peerConfig(lease(type, data)) == nil, "\(type ?? "nil") \(data ?? "nil")")
        }
    }

    @Test func leaseDataIsFlannelsByteForByte() throws {
        let key = [UInt8](repeating: 7, count: 32)
        let data = WireGuardLeaseData(publicKey: key, port: 51820)
        #expect(String(decoding: data.json, as: UTF8.self) == #"{"PublicKey":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","Port":51820}"#)
        #expect(try WireGuardLeaseData(parsing: data.json) == data)
        // flannel before v0.26.6 wrote no Port; 0 means the same: the reader's own ListenPort.
        #expect(try WireGuardLeaseData(parsing: Data(#"{"PublicKey":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="}"#.utf8)).port == nil)
        #expect(
            try WireGuardLeaseData(parsing: Data(#"{"PublicKey":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","Port":0}"#.utf8)).port
                == nil)
        for bad in [
            #"{"PublicKey":"short"}"#, #"{"Port":51820}"#, #"{"PublicKey":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","Port":70000}"#,
            "[]", "garbage",
        ] {
            #expect(throws: WireGuardLeaseData.Invalid.self) { try WireGuardLeaseData(parsing: Data(bad.utf8)) }
        }
    }

    @Test func keyFileIsMadeOnceWithMode0400AndKept() throws {
        let dir = "/tmp/twill-wgkey-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        defer { _ = try? Subprocess.run("/bin/rm", ["-rf", dir]) }
        let path = dir + "/run/wgkey"
        let (key, created) = try WireGuardKeyFile.loadOrCreate(path)
        #expect(created)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o400)
        let text = try #require(try Files.readText(path))
        #expect(text.count == 44 && Data(base64Encoded: text)?.count == 32)
        let (again, createdAgain) = try WireGuardKeyFile.loadOrCreate(path)
        #expect(!createdAgain && again.constantTimeEquals(key))
        // Clamped, as wg genkey's.
        #expect(key.array[0] & 7 == 0 && key.array[31] & 0xC0 == 0x40)
        // A file that holds no key is refused and left as it is.
        try AtomicFile.write(Array("not a key\n".utf8), to: dir + "/bad", mode: 0o600)
        #expect(throws: WireGuardError.self) { try WireGuardKeyFile.loadOrCreate(dir + "/bad") }
        #expect(try Files.readText(dir + "/bad") == "not a key\n")
        // wg genkey's output (with its newline) is read as flannel reads it.
        try AtomicFile.write(Array((text + "\n").utf8), to: dir + "/genkey", mode: 0o400)
        #expect(try WireGuardKeyFile.loadOrCreate(dir + "/genkey").key.constantTimeEquals(key))
    }
}
