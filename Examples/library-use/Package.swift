// swift-tools-version:6.0
// Using Twill's etcd client and lease model from another program: lists the leases.
// Build: swift build (from this folder); run: .build/debug/lease-list http://127.0.0.1:2379
import PackageDescription

let package = Package(
    name: "lease-list",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "twill", path: "../..")],
    targets: [
        .executableTarget(name: "lease-list", dependencies: [
            .product(name: "TwillEtcd", package: "twill"),
            .product(name: "TwillLease", package: "twill"),
        ]),
    ]
)
