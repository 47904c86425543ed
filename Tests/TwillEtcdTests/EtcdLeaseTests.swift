import Foundation
import Testing
import TwillEtcd
import TwillTestSupport

@Suite(.serialized, .requiresEtcd) struct EtcdLeaseTests {
    @Test func grantAttachExpire() async throws {
        try await withEtcd { etcd in
            let c = try etcd.client()
            // A long lease to read back (a loaded machine must not expire it meanwhile)...
            let long = try await c.grant(ttl: 120)
            try await c.put("/l/long", "x", lease: long.id)
            #expect(try await c.value("/l/long").lease == long.id)
            let status = try await c.timeToLive(lease: long.id)
            #expect(status?.grantedTTL == 120)
            #expect(status?.keys == ["/l/long"])
            // ...and a short one to watch expire.
            let lease = try await c.grant(ttl: 2)
            #expect(lease.id != 0 && lease.ttl == 2)
            try await c.put("/l/short", "x", lease: lease.id)
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
            let lease = try await c.grant(ttl: 3)
            try await c.put("/l/kept", "x", lease: lease.id)
            // Three TTLs' worth of time, refreshed every ~TTL/3.
            for _ in 0..<9 {
                try await Task.sleep(for: .milliseconds(1000))
                let ttl = try await c.keepAlive(lease: lease.id)
                #expect(ttl == 3)
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
