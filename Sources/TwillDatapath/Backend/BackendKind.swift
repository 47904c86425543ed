import TwillAddress

/// One backend type as the registry knows it: its name, the families it runs, and how its
/// settings are checked and a backend built. Each backend's folder defines its own
/// (`UDPBackend.kind`, ...); the registry is the list of them.
public struct BackendKind: Sendable {
    /// What the agent gives a checked backend to build it with.
    public struct Context: Sendable {
        /// The interface peers reach this node through.
        public var external: ExternalInterface
        /// The families the network runs (one the kind supports).
        public var families: IPFamilies
        /// The agent's own flags for the backends.
        public var options: BackendRegistry.Options
        /// Opens the kernel connection the backend programs (only backends that need one call it).
        public var kernel: @Sendable () throws -> any KernelRouting

        public init(
            external: ExternalInterface, families: IPFamilies, options: BackendRegistry.Options,
            kernel: @escaping @Sendable () throws -> any KernelRouting
        ) {
            self.external = external
            self.families = families
            self.options = options
            self.kernel = kernel
        }
    }

    /// Builds the backend from checked settings; touches no kernel state (that is `prepare()`).
    public typealias Builder = @Sendable (Context) throws -> any Backend

    /// `Backend.Type`.
    public var type: String
    /// The family sets it runs: `[.ipv4]` always; `.dualStack` if it carries IPv6 beside
    /// IPv4; `[.ipv6]` if it runs on a node without IPv4.
    public var families: [IPFamilies]
    /// Checks `Backend`'s settings for this type, naming the setting and what is wrong with
    /// it; returns the builder. Pure: no kernel, no files.
    public var check: @Sendable (BackendSpec, BackendRegistry.Options) throws(BackendError) -> Builder

    public init(
        type: String, families: [IPFamilies],
        check: @escaping @Sendable (BackendSpec, BackendRegistry.Options) throws(BackendError) -> Builder
    ) {
        self.type = type
        self.families = families
        self.check = check
    }

    /// flannel's `Backend.MTU`: the underlay MTU to size the device from, for every backend.
    /// 576 is the smallest IPv4 path MTU a host must accept.
    public static func mtu(_ spec: BackendSpec) throws(BackendError) -> Int? { try spec.int("MTU", in: 576...65535) }
}
