import CTwillSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where descriptors the data path must keep across a restart of the agent are kept: the
/// service manager's file descriptor store under systemd, nowhere otherwise.
///
/// A TUN queue or UDP socket that stays open while no agent runs goes on queueing packets
/// in the kernel; the next agent takes the same descriptors back and reads them. Names are
/// the keys: one descriptor per name.
public protocol DescriptorKeeper: Sendable {
    /// Whether kept descriptors outlive this process (false: ``keep(_:name:)`` does nothing).
    var persists: Bool { get }
    /// The descriptor an earlier run kept under `name`, now this process's to own (close or
    /// keep again), or nil. Each is handed out once.
    func take(_ name: String) -> Int32?
    /// The names of descriptors an earlier run kept and nobody has taken yet.
    func untaken() -> [String]
    /// Keeps (a duplicate of) `fd` under `name` for the next run, replacing what was kept
    /// under that name.
    func keep(_ fd: Int32, name: String)
    /// Drops what is kept under `name` (the descriptor is about to be closed for good).
    func forget(_ name: String)
    /// The agent exits with its data path in place: what is kept must outlive this process
    /// (systemd's store does so by itself). True when something was handed off.
    @discardableResult func handOff() -> Bool
}

extension DescriptorKeeper {
    public func handOff() -> Bool { false }
}

/// A keeper that keeps nothing: outside systemd, and in tests that want none.
public struct NoDescriptorKeeper: DescriptorKeeper {
    public init() {}
    public var persists: Bool { false }
    public func take(_ name: String) -> Int32? { nil }
    public func untaken() -> [String] { [] }
    public func keep(_ fd: Int32, name: String) {}
    public func forget(_ name: String) {}
}

/// systemd's file descriptor store (`FDSTORE=1`, sd_notify(3); `FileDescriptorStoreMax=` in
/// the unit): descriptors sent to the notify socket are held by systemd while the service
/// restarts and handed to the next start in `LISTEN_FDS`/`LISTEN_FDNAMES` (sd_listen_fds(3)).
///
/// systemd polls stored descriptors and drops those that report an error; a UDP socket may
/// report one for an ICMP error, so each is stored with `FDPOLL=0`.
public final class SystemdDescriptorStore: DescriptorKeeper {
    private let notifySocket: String
    /// Handed over at start and not yet taken, by name.
    private let handed: Mutex<[String: Int32]>

    /// The store of the service this process runs as, or nil outside systemd (no
    /// `NOTIFY_SOCKET`). Takes what systemd handed over (`LISTEN_FDS` naming this process)
    /// and removes those variables, so that no child process takes the descriptors for its own.
    public static func fromEnvironment() -> SystemdDescriptorStore? {
        let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
        var handed: [String: Int32] = [:]
        if let pid = env("LISTEN_PID").flatMap(Int32.init), pid == getpid(), let count = env("LISTEN_FDS").flatMap(Int32.init), count > 0 {
            let names = (env("LISTEN_FDNAMES") ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            for i in 0..<count {
                let fd = 3 + i // SD_LISTEN_FDS_START
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC) // the agent's own children must not inherit it
                let name = Int(i) < names.count ? names[Int(i)] : "unknown"
                if let duplicate = handed[name] { Glibc.close(duplicate) }
                handed[name] = fd
            }
        }
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) }
        guard let socket = env("NOTIFY_SOCKET"), !socket.isEmpty else {
            for fd in handed.values { Glibc.close(fd) }
            return nil
        }
        return SystemdDescriptorStore(notifySocket: socket, handed: handed)
    }

    init(notifySocket: String, handed: [String: Int32]) {
        self.notifySocket = notifySocket
        self.handed = Mutex(handed)
    }

    public var persists: Bool { true }

    public func take(_ name: String) -> Int32? { handed.withLock { $0.removeValue(forKey: name) } }

    public func untaken() -> [String] { handed.withLock { Array($0.keys).sorted() } }

    public func keep(_ fd: Int32, name: String) {
        // The old descriptor under this name (a rebuilt engine's) must not linger in the store.
        forget(name)
        _ = SystemdNotifySocket.send("FDSTORE=1\nFDNAME=\(name)\nFDPOLL=0", to: notifySocket, descriptor: fd)
    }

    public func forget(_ name: String) {
        _ = SystemdNotifySocket.send("FDSTOREREMOVE=1\nFDNAME=\(name)", to: notifySocket)
    }
}

/// The sd_notify datagram: `message` to the unix socket `path` ("@name" is an abstract
/// socket), with `descriptor` attached (SCM_RIGHTS) when given.
public enum SystemdNotifySocket {
    /// Sends one notification; false when the socket cannot be reached.
    @discardableResult
    public static func send(_ message: String, to path: String, descriptor: Int32? = nil) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let addressLength = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        var payload = Array(message.utf8)
        var control = [UInt8](repeating: 0, count: twill_cmsg_space(MemoryLayout<Int32>.size))
        let sent = payload.withUnsafeMutableBytes { body in
            control.withUnsafeMutableBytes { controlBytes in
                withUnsafeMutablePointer(to: &addr) { addrPointer in
                    var iov = iovec(iov_base: body.baseAddress, iov_len: body.count)
                    return withUnsafeMutablePointer(to: &iov) { iovPointer in
                        var msg = msghdr()
                        msg.msg_name = UnsafeMutableRawPointer(addrPointer)
                        msg.msg_namelen = addressLength
                        msg.msg_iov = iovPointer
                        msg.msg_iovlen = 1
                        if var value = descriptor {
                            msg.msg_control = controlBytes.baseAddress
                            msg.msg_controllen = controlBytes.count
                            twill_put_cmsg(&msg, SOL_SOCKET, Int32(SCM_RIGHTS), &value, MemoryLayout<Int32>.size)
                        }
                        return Syscall.retryOnInterrupt { sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) }
                    }
                }
            }
        }
        return sent == payload.count
    }
}
