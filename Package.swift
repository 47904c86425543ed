// swift-tools-version:6.1
// Twill is Linux-only (netlink, TUN, network namespaces): no platforms are declared for others.
import PackageDescription

let package = Package(
    name: "twill",
    products: [
        .executable(name: "twill", targets: ["twill"]),
        .library(name: "TwillEtcd", targets: ["TwillEtcd"]),
        .library(name: "TwillLease", targets: ["TwillLease"]),
        .library(name: "TwillAddress", targets: ["TwillAddress"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        // Without its default traits Hummingbird needs only FoundationEssentials (no ICU data)
        // and not swift-configuration: a much smaller binary.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0", traits: []),
    ],
    targets: [
        // System libraries: module maps plus a few C helpers for what Swift cannot import.
        // libcurl, loaded at first use (see Sources/CCurl/include/CCurl.h); its headers come
        // from libcurl4-openssl-dev (make deps).
        .target(name: "CCurl", linkerSettings: [.linkedLibrary("dl")]),
        // OpenSSL's libcrypto for the wireguard backend, loaded at first use (see
        // Sources/CCrypto/include/CCrypto.h); its headers come from libssl-dev (make deps).
        .target(name: "CCrypto", linkerSettings: [.linkedLibrary("dl")]),
        .systemLibrary(name: "CNetlink", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .target(name: "TwillAddress"),
        // The system layer: errno, threads, namespaces, atomic files, subprocesses, and the C
        // shims Swift cannot do without (mmsghdr, CMSG_*, variadic prctl/ioctl).
        .target(name: "CTwillSystem"),
        .target(name: "TwillSystem", dependencies: ["CTwillSystem"]),
        .target(
            name: "TwillEtcd",
            dependencies: [
                "CCurl", "TwillSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .executableTarget(
            name: "twill",
            dependencies: [
                "TwillAddress", "TwillEtcd", "TwillLease", "TwillDatapath", "TwillAgent", "TwillNetlink", "TwillSystem",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Test-only helpers: a real etcd on free loopback ports, namespace hosts, and the in-memory
        // fakes the unit tier runs on (InMemoryEtcd, FakeKernel, RecordingBackend).
        .target(
            name: "TwillTestSupport",
            dependencies: [
                "TwillEtcd", "TwillSystem", "TwillDatapath", "TwillNetlink", "TwillAddress",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TwillTestSupport"
        ),
        .target(
            name: "TwillLease",
            dependencies: ["TwillAddress", "TwillEtcd", "TwillSystem", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "TwillNetlink",
            dependencies: ["CNetlink", "TwillAddress", "TwillSystem", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "TwillDatapath",
            dependencies: [
                "TwillAddress", "TwillNetlink", "TwillSystem", "CTwillSystem", "CCrypto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Runs a udp engine in the current network namespace for bench/datapath.
        .executableTarget(name: "TwillDatapathBench", dependencies: ["TwillDatapath", "TwillAddress", "CAllocationCounter"]),
        // Counts the bench's heap allocations (it replaces malloc in that executable only).
        .target(name: "CAllocationCounter"),
        .target(
            name: "TwillAgent",
            dependencies: [
                "TwillAddress", "TwillEtcd", "TwillLease", "TwillDatapath", "TwillNetlink", "TwillSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .testTarget(name: "TwillAddressTests", dependencies: ["TwillAddress"]),
        .testTarget(name: "TwillSystemTests", dependencies: ["TwillSystem", "TwillTestSupport"]),
        .testTarget(name: "TwillLeaseTests", dependencies: ["TwillLease", "TwillTestSupport"]),
        .testTarget(name: "TwillAgentTests", dependencies: ["TwillAgent", "TwillTestSupport", "TwillNetlink", "twill"]),
        .testTarget(name: "TwillEtcdTests", dependencies: ["TwillEtcd", "TwillTestSupport"]),
        .testTarget(name: "TwillNetlinkTests", dependencies: ["TwillNetlink", "TwillSystem", "TwillTestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TwillTestSupport", "TwillNetlink", "TwillSystem", "twill"]),
        // Test-only: saves the input a fuzz test was trying when the process crashed.
        .target(name: "CFuzzSupport", path: "Tests/CFuzzSupport"),
        .testTarget(
            name: "TwillDatapathTests",
            dependencies: ["TwillDatapath", "TwillNetlink", "TwillAddress", "TwillSystem", "TwillTestSupport", "CFuzzSupport"],
            exclude: ["Engine/FuzzCorpus"]),
    ],
    swiftLanguageModes: [.v6]
)
