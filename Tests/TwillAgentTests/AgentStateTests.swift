import Testing
import TwillAddress
import TwillLease

@testable import TwillAgent

/// The health model: what makes the node ready and the agent alive, with the reasons.
@Suite struct AgentStateTests {
    static let lease = Lease(
        subnet: SubnetKey(ipv4: IPv4Network("198.18.3.0/24")!), attributes: LeaseAttributes(publicIP: IPv4Address("198.51.100.1")!),
        etcdLease: 42, modRevision: 7)

    @Test func readyOnlyWithALiveLeaseAMatchingSubnetEnvAndTheBackendUp() {
        let state = AgentState()
        #expect(!state.readiness.ready)
        #expect(state.readiness.reasons.contains("no subnet lease yet"))
        state.setLease(Self.lease, expiry: .now + .seconds(60), ttl: 60)
        state.setBackend(type: "udp", up: true)
        state.setSubnetEnvProblem(nil)
        #expect(state.readiness.ready, "\(state.readiness.reasons)")
        state.setSubnetEnvProblem("cannot write subnet.env: No space left on device (ENOSPC)")
        #expect(state.readiness.reasons == ["cannot write subnet.env: No space left on device (ENOSPC)"])
        state.setSubnetEnvProblem(nil)
        state.setLease(Self.lease, expiry: .now - .seconds(1), ttl: 60)
        #expect(state.readiness.reasons.first?.contains("has expired") == true)
        state.setLease(Self.lease, expiry: .now + .seconds(60), ttl: 60)
        state.setChangingOver("applying a new network config")
        #expect(state.readiness.reasons == ["applying a new network config"])
        state.setChangingOver(nil)
        state.setBackend(type: "udp", up: false)
        #expect(state.readiness.reasons == ["the backend (udp) is not up"])
    }

    @Test func aliveWhileLoopsBeatAndTheDataPathIsNotBrokenForGood() {
        let state = AgentState()
        #expect(state.liveness.alive)
        state.beat(.watch, deadline: .seconds(60))
        state.beat(.lease, deadline: .zero)
        state.waiting(.lease, on: "etcd keepalive")
        let (alive, reasons) = state.liveness
        #expect(!alive)
        #expect(reasons.count == 1 && reasons[0].contains("lease loop has made no progress") && reasons[0].contains("etcd keepalive"))
        state.retire(.lease)
        #expect(state.liveness.alive)
        state.setDatapathFailure("cannot open TUN device twill0: Device or resource busy (EBUSY)")
        #expect(
            state.liveness.reasons == [
                "the data path is broken beyond self-repair: cannot open TUN device twill0: Device or resource busy (EBUSY)"
            ])
        #expect(!state.readiness.ready)
        state.setDatapathFailure(nil)
        #expect(state.liveness.alive)
    }

    /// A reservation never expires.
    @Test func aReservationIsNeverExpired() {
        let state = AgentState()
        var reservation = Self.lease
        reservation.etcdLease = 0
        state.setLease(reservation, expiry: .now - .seconds(100), ttl: 60)
        state.setBackend(type: "udp", up: true)
        state.setSubnetEnvProblem(nil)
        #expect(state.readiness.ready)
    }
}
