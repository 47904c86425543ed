import TwillEtcd
import TwillLease

let endpoint = CommandLine.arguments.dropFirst().first ?? "http://127.0.0.1:2379"
do {
    let client = try EtcdClient(EtcdConfiguration(endpoints: [endpoint]))
    let registry = SubnetRegistry(etcd: client)
    let config = try await registry.networkConfig()
    print("network \(config.network.map { "\($0)" } ?? "-"), backend \(config.backendType)")
    for lease in try await registry.leases().leases {
        print("\(lease.subnet.ipv4)\t\(lease.attributes.publicIP)\t\(lease.isReservation ? "reserved" : "lease \(lease.etcdLease)")")
    }
} catch {
    print("lease-list: \(error)")
}
