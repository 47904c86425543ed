// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "twill",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "twill", targets: ["twill"]),
        .library(name: "TwillEtcd", targets: ["TwillEtcd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        // System libraries: module maps plus a few C helpers for what Swift cannot import.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(name: "TwillAddress"),
        .target(
            name: "TwillEtcd",
            dependencies: [
                "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "twill",
            dependencies: [
                "TwillEtcd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Test-only helpers: a real etcd on free loopback ports.
        .target(
            name: "TwillTestSupport",
            dependencies: ["TwillEtcd", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TwillTestSupport"
        ),
        // Thin syscall helpers for the udp engine (mmsghdr, recvmmsg/sendmmsg, setns, CMSG_*).
        .target(name: "CDatapath"),
        .target(name: "TwillDatapath", dependencies: ["TwillAddress", "CDatapath"]),
        // Runs a udp engine in the current network namespace for bench/datapath.
        .executableTarget(name: "TwillDatapathBench", dependencies: ["TwillDatapath", "TwillAddress"]),
        .testTarget(name: "TwillAddressTests", dependencies: ["TwillAddress"]),
        .testTarget(name: "TwillEtcdTests", dependencies: ["TwillEtcd", "TwillTestSupport"]),
        .testTarget(name: "TwillDatapathTests", dependencies: ["TwillDatapath", "TwillAddress", "TwillTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
