// A udp engine in the current network namespace, for bench/datapath (run it under
// `ip netns exec`). Opens the TUN and the socket, prints "ready", runs until SIGINT/SIGTERM,
// then prints one line of counters and the process's CPU seconds.
//
// usage: TwillDatapathBench --tun twill0 --local-subnet 198.18.1.0/24 --bind 198.51.100.1
//          [--local-subnet6 2001:db8:100:1::/64] [--bind6 2001:db8:1::1]
//          [--port 8285] [--peer 198.18.2.0/24=198.51.100.2[=2001:db8:100:2::/64[=2001:db8:1::2]]]... [--no-source-checks] [--batch 64]
// With --bind6 the datagrams go over IPv6, to each --peer's last (IPv6) address.
//          [--offloads] [--no-udp-offloads] [--queues N] [--threads-per-queue 1|2] [--txqueuelen N]
//          [--wireguard-key FILE --peer-key SUBNET=BASE64...]
// With --wireguard-key the engine carries WireGuard (its control thread beside it), each
// --peer its public key from --peer-key; "ready" is printed once the engine runs.
import CAllocationCounter
import TwillAddress
import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let text = "TwillDatapathBench: \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

func parse<T>(_ text: String?, _ flag: String, _ make: (String) -> T?) -> T {
    guard let text, let value = make(text) else { fail("\(flag): missing or invalid value") }
    return value
}

func runBench() {
    var tunName = "twill0"
    var localSubnet: IPv4Network?
    var localSubnet6: IPv6Network?
    var bindAddress = IPv4Address.any
    var bindAddress6: IPv6Address?
    var port = UDPSocket.defaultPort
    var peers: [PeerLease] = []
    var checkSources = true
    var batchSize = 64
    var offloads = false
    var udpOffloads = true
    var queues = 1
    var threadsPerQueue = 1
    var txQueueLength: Int32 = 0
    var wireGuardKey: String?
    var peerKeys: [IPv4Network: String] = [:]
    var arguments = CommandLine.arguments.dropFirst()
    while let flag = arguments.popFirst() {
        switch flag {
        case "--tun": tunName = parse(arguments.popFirst(), flag) { $0 }
        case "--local-subnet": localSubnet = parse(arguments.popFirst(), flag) { IPv4Network($0) }
        case "--local-subnet6": localSubnet6 = parse(arguments.popFirst(), flag) { IPv6Network($0) }
        case "--bind": bindAddress = parse(arguments.popFirst(), flag) { IPv4Address($0) }
        case "--bind6": bindAddress6 = parse(arguments.popFirst(), flag) { IPv6Address($0) }
        case "--port": port = parse(arguments.popFirst(), flag) { UInt16($0) }
        case "--batch": batchSize = parse(arguments.popFirst(), flag) { Int($0) }
        case "--no-source-checks": checkSources = false
        case "--offloads": offloads = true
        case "--no-udp-offloads": udpOffloads = false
        case "--queues": queues = parse(arguments.popFirst(), flag) { Int($0) }
        case "--threads-per-queue": threadsPerQueue = parse(arguments.popFirst(), flag) { Int($0) }
        case "--txqueuelen": txQueueLength = parse(arguments.popFirst(), flag) { Int32($0) }
        case "--wireguard-key": wireGuardKey = parse(arguments.popFirst(), flag) { $0 }
        case "--peer-key":
            let (subnet, key) = parse(arguments.popFirst(), flag) { text -> (IPv4Network, String)? in
                guard let eq = text.firstIndex(of: "="), let subnet = IPv4Network(String(text[..<eq])) else { return nil }
                return (subnet, String(text[text.index(after: eq)...]))
            }
            peerKeys[subnet] = key
        case "--peer":
            peers.append(
                parse(arguments.popFirst(), flag) { text -> PeerLease? in
                    let parts = text.split(separator: "=")
                    guard (2...4).contains(parts.count), let subnet = IPv4Network(String(parts[0])),
                        let ip = IPv4Address(String(parts[1]))
                    else { return nil }
                    let subnet6 = parts.count >= 3 ? IPv6Network(String(parts[2])) : nil
                    let ip6 = parts.count == 4 ? IPv6Address(String(parts[3])) : nil
                    if parts.count >= 3, subnet6 == nil { return nil }
                    if parts.count == 4, ip6 == nil { return nil }
                    return PeerLease(subnet: subnet, publicIP: ip, backendType: nil, backendData: nil, subnet6: subnet6, publicIPv6: ip6)
                })
        default: fail("unknown argument \(flag)")
        }
    }
    guard let localSubnet else { fail("--local-subnet is required") }

    // Block the stop signals before the engine's threads exist so they inherit the mask and
    // only sigwait below sees them.
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGINT)
    sigaddset(&signals, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &signals, nil)

    do {
        var configuration = EngineConfiguration(
            localSubnet: localSubnet, peerPort: port, checkSources: checkSources, batchSize: batchSize,
            udpOffloads: udpOffloads, queues: queues, threadsPerQueue: threadsPerQueue, localSubnet6: localSubnet6)
        configuration.ipv6Underlay = bindAddress6 != nil
        var control: WireGuardControl?
        if let wireGuardKey {
            try WireGuardCrypto.load()
            let key = try WireGuardKeyFile.loadOrCreate(wireGuardKey).key
            let c = try WireGuardControl(identity: WireGuardIdentity(privateKey: key))
            configuration.wireGuard = c.engineOptions(mtu: 1420)
            var configs: [WireGuardPeerConfig] = []
            for p in peers {
                guard let text = peerKeys[p.subnet], let publicKey = WireGuardKeyFile.decodeKey(text) else {
                    fail("--peer-key: no valid key for \(p.subnet)")
                }
                configs.append(
                    WireGuardPeerConfig(
                        publicKey: publicKey, endpoint: WireGuardEndpoint(address: p.publicIP, port: port), allowedIPs: p.subnet))
            }
            c.setPeers(configs)
            control = c
        }
        let engine = try PacketEngine.open(
            tunName: tunName, tunOffloads: offloads, address: bindAddress, address6: bindAddress6,
            configuration: configuration)
        if txQueueLength > 0 { try engine.setTransmitQueueLength(txQueueLength) }
        engine.update(peers: peers)
        control?.attach(engine)
        try control?.start()
        try engine.start()
        print("ready offloads=\(engine.hasTUNOffloads) queues=\(engine.queueCount) source_ports=\(engine.sourcePorts.count)")
        fflush(nil)
        // Allocations from here until the stop signal are the packet threads' own: the main
        // thread waits in sigwait and nothing else runs.
        let allocationsAtReady = twill_allocation_count()
        var received: Int32 = 0
        sigwait(&signals, &received)
        let allocationsWhileRunning = twill_allocation_count() - allocationsAtReady
        engine.stop()
        control?.stop()
        let c = engine.counters()
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu =
            Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let drops = DropReason.allCases.filter { c[drop: $0] > 0 }.map { "\($0)=\(c[drop: $0])" }
        print(
            "cpu_seconds=\(cpu) tx_packets=\(c.txPackets) tx_bytes=\(c.txBytes) rx_packets=\(c.rxPackets) rx_bytes=\(c.rxBytes) drops=\(drops.isEmpty ? "none" : drops.joined(separator: ",")) allocations=\(allocationsWhileRunning)"
        )
        fflush(nil)
    } catch {
        fail("\(error)")
    }
}

runBench()
