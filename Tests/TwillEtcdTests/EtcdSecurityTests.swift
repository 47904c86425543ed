import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

@Suite(.serialized, .requiresEtcd) struct EtcdSecurityTests {
    static func enableAuth(_ etcd: EtcdServer) throws {
        try etcd.etcdctl(["user", "add", "root:rootpw"])
        try etcd.etcdctl(["user", "add", "twill:twillpw"])
        try etcd.etcdctl(["role", "add", "twill-role"])
        try etcd.etcdctl(["role", "grant-permission", "twill-role", "--prefix=true", "readwrite", "/coreos.com/"])
        try etcd.etcdctl(["user", "grant-role", "twill", "twill-role"])
        try etcd.etcdctl(["auth", "enable"])
    }

    @Test func authWithRoleAndReauthentication() async throws {
        // A one-second token TTL forces the client to re-authenticate mid-test.
        try await withEtcd(extraArguments: ["--auth-token", "simple", "--auth-token-ttl", "1"]) { etcd in
            try Self.enableAuth(etcd)
            let c = try etcd.client(username: "twill", password: "twillpw")
            try await c.put("/coreos.com/network/config", "{}")
            #expect(try await c.value("/coreos.com/network/config").valueString == "{}")
            // Outside the role's prefix: refused, clearly.
            await #expect(throws: EtcdError.self) { try await c.put("/elsewhere", "x") }
            // Let the token expire; the next call re-authenticates once and succeeds.
            try await Task.sleep(for: .seconds(3))
            #expect(try await c.value("/coreos.com/network/config").valueString == "{}")
            // Watches authenticate too.
            var it = c.watch(prefix: "/coreos.com/", fromRevision: nil).makeAsyncIterator()
            #expect(try await it.next()?.created == true)
            // No credentials at all: refused.
            let anonymous = try etcd.client()
            await #expect(throws: EtcdError.self) { try await anonymous.get("/coreos.com/network/config") }
        }
    }

    @Test func wrongPasswordIsClearError() async throws {
        try await withEtcd { etcd in
            try Self.enableAuth(etcd)
            let c = try etcd.client(username: "twill", password: "wrong")
            do {
                _ = try await c.get("/coreos.com/network/config")
                Issue.record("expected an authentication error")
            } catch let e as EtcdError {
                guard case .unauthenticated(_, let message) = e else {
                    Issue.record("expected unauthenticated, got \(e)")
                    return
                }
                #expect(message.contains("authentication failed"))
            }
        }
    }

    @Test func tlsWithClientCertificate() async throws {
        try await withEtcd(tls: true) { etcd in
            #expect(etcd.endpoint.hasPrefix("https://"))
            let c = try etcd.client()
            try await c.put("/tls", "secure")
            #expect(try await c.value("/tls").valueString == "secure")
            var it = c.watch(prefix: "/tls", fromRevision: nil).makeAsyncIterator()
            #expect(try await it.next()?.created == true)
        }
    }

    @Test func tlsWrongCAFailsClearly() async throws {
        try await withEtcd(tls: true) { etcd in
            let tls = try #require(etcd.tls)
            let c = try EtcdClient(
                EtcdConfiguration(
                    endpoints: [etcd.endpoint], caFile: tls.otherCAFile, certFile: tls.clientCert, keyFile: tls.clientKey))
            do {
                _ = try await c.get("/tls")
                Issue.record("a CA that did not sign the server's certificate must be refused")
            } catch let e as EtcdError {
                guard case .transport(let endpoints, let message) = e else {
                    Issue.record("expected transport, got \(e)")
                    return
                }
                #expect(endpoints == [etcd.endpoint])
                #expect(message.lowercased().contains("certificate") || message.lowercased().contains("ssl"), "\(message)")
            }
        }
    }
}
