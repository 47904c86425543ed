import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

@Suite(.serialized) struct EtcdLeaseTests {
    @Test func grantAttachExpire() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let lease = try await c.grant(ttl: 2)
            #expect(lease.id != 0 && lease.ttl == 2)
            try await c.put("/l/short", "x", lease: lease.id)
            let kv = try await c.value("/l/short")
            #expect(kv.lease == lease.id)
            let status = try await c.timeToLive(lease: lease.id)
            #expect(status?.grantedTTL == 2)
            #expect(status?.keys == ["/l/short"])
            // Let it lapse: the key goes with it (bounded wait).
            var gone = false
            for _ in 0..<60 where !gone {
                try await Task.sleep(for: .milliseconds(200))
                gone = try await c.get("/l/short").kvs.isEmpty
            }
            #expect(gone)
            #expect(try await c.timeToLive(lease: lease.id) == nil)
            await #expect(throws: EtcdError.leaseNotFound(id: lease.id)) { try await c.keepAlive(lease: lease.id) }
        }
    }

    @Test func keepAliveExtends() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let lease = try await c.grant(ttl: 2)
            try await c.put("/l/kept", "x", lease: lease.id)
            // Three TTLs' worth of time, refreshed every ~TTL/3.
            for _ in 0..<9 {
                try await Task.sleep(for: .milliseconds(650))
                let ttl = try await c.keepAlive(lease: lease.id)
                #expect(ttl == 2)
            }
            #expect(try await c.get("/l/kept").kvs.count == 1)
        }
    }

    @Test func revokeDeletesKeys() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            let lease = try await c.grant(ttl: 60)
            try await c.put("/l/r1", "x", lease: lease.id)
            try await c.put("/l/r2", "y", lease: lease.id)
            try await c.revoke(lease: lease.id)
            #expect(try await c.list(prefix: "/l/").kvs.isEmpty)
            await #expect(throws: EtcdError.leaseNotFound(id: lease.id)) { try await c.revoke(lease: lease.id) }
        }
    }
}
