/// Why the udp engine dropped a packet; each has its own counter.
public enum DropReason: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// Not a well-formed IPv4 or IPv6 packet (see ``IPv4Header/Rejection``,
    /// ``IPv6Header/Rejection``); from either side.
    case malformed = 0
    /// A packet of a family the node does not run (IPv6 on an IPv4-only network, IPv4 on an
    /// IPv6-only one), or neither IPv4 nor IPv6; from either side.
    case wrongFamily
    /// A datagram whose outer source is no current peer's PublicIP.
    case unknownSender
    /// A datagram from a peer whose inner source lies outside that peer's leased subnet.
    case spoofedInnerSource
    /// A datagram whose inner destination lies outside this node's subnet.
    case wrongInnerDestination
    /// The TTL (IPv6: hop limit) would reach 0 (either direction).
    case ttlExpired
    /// A packet from the TUN for a destination no peer's subnet covers (answered with ICMP
    /// net unreachable, or ICMPv6 no route, where allowed; multicast never is).
    case noRoute
    /// A datagram larger than the receive buffer (truncated by the kernel).
    case oversize
    /// sendmmsg failed for the datagram (e.g. no route on the underlay, buffer full too long).
    case sendFailed
    /// The write into the TUN failed.
    case tunWriteFailed
    /// wireguard: no session keys for the peer, and more packets than can wait for the
    /// handshake (128 per peer, as wireguard-go): the oldest waiting one went.
    case noSessionKeys
    /// wireguard: a transport message to a receiver index we do not have.
    case unknownReceiver
    /// wireguard: a message that did not authenticate (wrong key, tampered).
    case notAuthentic
    /// wireguard: a counter already received, or too old for the window.
    case replayed
    /// wireguard: a handshake message that found the control queue full (a flood).
    case handshakeFlood

    public var description: String {
        switch self {
        case .malformed: "malformed"
        case .wrongFamily: "wrong_family"
        case .unknownSender: "unknown_sender"
        case .spoofedInnerSource: "spoofed_inner_source"
        case .wrongInnerDestination: "wrong_inner_destination"
        case .ttlExpired: "ttl_expired"
        case .noRoute: "no_route"
        case .oversize: "oversize"
        case .sendFailed: "send_failed"
        case .tunWriteFailed: "tun_write_failed"
        case .noSessionKeys: "no_session_keys"
        case .unknownReceiver: "unknown_receiver"
        case .notAuthentic: "not_authentic"
        case .replayed: "replayed"
        case .handshakeFlood: "handshake_flood"
        }
    }
}
