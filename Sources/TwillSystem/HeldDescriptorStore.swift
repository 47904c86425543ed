import CTwillSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The agent's own descriptor store, where no systemd keeps them: at a clean stop the kept
/// descriptors go to a small holder process (`twill hold-descriptors`, started from the
/// agent's own binary) which keeps them open until the next agent asks for them over a unix
/// socket, or for ``linger`` at most. While it holds them, packets for the overlay queue in
/// the TUN and datagrams from peers in the socket, exactly as under systemd's store.
///
/// The socket is abstract (`@twill-descriptors`): one per network namespace, so one per node,
/// gone with the holder, and reachable only from the node's own namespace (and only by root:
/// the holder checks the peer's credentials).
public final class HeldDescriptorStore: DescriptorKeeper {
    public static let socketName = "twill-descriptors"
    /// How long a holder waits for the next agent.
    public static let linger: Int32 = 30
    /// At most this many descriptors go to a holder (SCM_MAX_FD).
    static let maxDescriptors = 253

    private let handed: Mutex<[String: Int32]>
    /// Duplicates of what is kept, for the holder.
    private let kept = Mutex<[String: Int32]>([:])

    /// Takes what a holder in this network namespace holds (nothing when there is none).
    public init() {
        handed = Mutex(Self.collect())
    }

    public var persists: Bool { true }
    public func take(_ name: String) -> Int32? { handed.withLock { $0.removeValue(forKey: name) } }
    public func untaken() -> [String] { handed.withLock { Array($0.keys).sorted() } }

    public func keep(_ fd: Int32, name: String) {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        guard copy >= 0 else { return }
        kept.withLock { kept in
            if let old = kept.updateValue(copy, forKey: name) { Glibc.close(old) }
        }
    }

    public func forget(_ name: String) {
        kept.withLock { kept in
            if let old = kept.removeValue(forKey: name) { Glibc.close(old) }
        }
    }

    /// Starts a holder for what is kept (the last thing a clean stop does).
    @discardableResult
    public func handOff() -> Bool {
        // The binary by its name (so `ps` says twill), unless it was replaced meanwhile (an
        // upgrade): /proc/self/exe still runs the one this process runs.
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let path = n > 0 ? String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        return start(executable: path.hasPrefix("/") && !path.hasSuffix(" (deleted)") ? path : "/proc/self/exe")
    }

    /// Starts a holder for what is kept with the binary `executable`; true when one took them.
    @discardableResult
    public func start(executable: String) -> Bool {
        let held = kept.withLock { kept -> [(String, Int32)] in
            defer { kept = [:] }
            return kept.sorted { $0.key < $1.key }
        }
        defer { for (_, fd) in held { Glibc.close(fd) } }
        guard !held.isEmpty else { return false }
        // Bound before the holder starts: an agent started right after this one connects
        // (and waits in the backlog) even before the holder runs.
        guard let listener = Self.socket(), Self.withAddress({ bind(listener, $0, $1) }) == 0, listen(listener, 4) == 0 else {
            return false
        }
        defer { Glibc.close(listener) }
        // Copies above every target number first, so that no dup2 below overwrites a source.
        let high = ([listener] + held.prefix(Self.maxDescriptors).map(\.1)).map { fcntl($0, F_DUPFD_CLOEXEC, 1024) }
        defer { for fd in high where fd >= 0 { Glibc.close(fd) } }
        guard !high.contains(where: { $0 < 0 }) else { return false }
        let passed = Array(zip(held.prefix(Self.maxDescriptors).map(\.0), high.dropFirst()))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Into place from 3 on (dup2 clears close-on-exec).
        posix_spawn_file_actions_adddup2(&actions, high[0], 3)
        for (i, entry) in passed.enumerated() { posix_spawn_file_actions_adddup2(&actions, entry.1, Int32(4 + i)) }
        // Nothing else: a descriptor the agent inherited (its parent's pipes) must not be kept
        // open by the holder.
        _ = twill_spawn_close_from(&actions, Int32(4 + passed.count))
        // Its own session: a stop of the agent's process group does not take it along.
        var attributes = Subprocess.spawnAttributes(newSession: true)
        defer { posix_spawnattr_destroy(&attributes) }
        let arguments = ["twill", "hold-descriptors", passed.map(\.0).joined(separator: ":")]
        var pid = pid_t()
        let rc = CStringArray(arguments).withPointers { argv in
            CStringArray(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]).withPointers { env in
                posix_spawn(&pid, executable, &actions, &attributes, argv, env)
            }
        }
        return rc == 0
    }

    /// The holder (`twill hold-descriptors NAMES`): the listening socket is descriptor 3,
    /// the held ones 4 on; waits for one agent of this machine's root, hands everything
    /// over and returns (or gives up after ``linger`` seconds, and the descriptors close).
    public static func hold(names: String) {
        let list = names.split(separator: ":").map(String.init)
        let fds = (0..<list.count).map { Int32(4 + $0) }
        var poller = pollfd(fd: 3, events: Int16(POLLIN), revents: 0)
        let deadline = time(nil) + Int(linger)
        while time(nil) < deadline {
            guard Syscall.retryOnInterrupt({ poll(&poller, 1, 1000) }) > 0 else { continue }
            let client = accept(3, nil, nil)
            guard client >= 0 else { continue }
            defer { Glibc.close(client) }
            // struct ucred: pid, uid, gid.
            var credentials: (Int32, UInt32, UInt32) = (0, .max, .max)
            var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
            guard getsockopt(client, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.1 == 0 else { continue }
            if send(client, payload: Array(list.joined(separator: "\n").utf8), descriptors: fds) { return }
        }
    }

    // MARK: Internals

    /// What a holder hands over, by name; empty when none listens.
    static func collect() -> [String: Int32] {
        guard let s = socket() else { return [:] }
        defer { Glibc.close(s) }
        guard withAddress({ connect(s, $0, $1) }) == 0 else { return [:] }
        // Only a root holder's descriptors are taken: anybody can bind an abstract name.
        var credentials: (Int32, UInt32, UInt32) = (0, .max, .max)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(s, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.1 == 0 else { return [:] }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var payload = [UInt8](repeating: 0, count: 1 << 16)
        var control = [UInt8](repeating: 0, count: twill_cmsg_space(maxDescriptors * MemoryLayout<Int32>.size))
        var fds = [Int32](repeating: -1, count: maxDescriptors)
        let (received, count) = payload.withUnsafeMutableBytes { body in
            control.withUnsafeMutableBytes { controlBytes in
                var iov = iovec(iov_base: body.baseAddress, iov_len: body.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer -> (Int, Int) in
                    var msg = msghdr()
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    msg.msg_control = controlBytes.baseAddress
                    msg.msg_controllen = controlBytes.count
                    let n = Syscall.retryOnInterrupt { recvmsg(s, &msg, Int32(MSG_CMSG_CLOEXEC)) }
                    guard n >= 0 else { return (-1, 0) }
                    return (n, Int(fds.withUnsafeMutableBufferPointer { twill_get_rights(&msg, $0.baseAddress, Int32(maxDescriptors)) }))
                }
            }
        }
        guard received >= 0 else { return [:] }
        let names = String(decoding: payload.prefix(received), as: UTF8.self).split(separator: "\n").map(String.init)
        var out: [String: Int32] = [:]
        for (i, fd) in fds.prefix(count).enumerated() {
            if i < names.count, out[names[i]] == nil { out[names[i]] = fd } else { Glibc.close(fd) }
        }
        return out
    }

    private static func socket() -> Int32? {
        let s = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        return s >= 0 ? s : nil
    }

    /// Calls `body` with the abstract address `@twill-descriptors`.
    private static func withAddress(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let name = [0] + Array(socketName.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in name.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }

    private static func send(_ s: Int32, payload: [UInt8], descriptors: [Int32]) -> Bool {
        var payload = payload.isEmpty ? [0] : payload
        var control = [UInt8](repeating: 0, count: twill_cmsg_space(descriptors.count * MemoryLayout<Int32>.size))
        var fds = descriptors
        let sent = payload.withUnsafeMutableBytes { body in
            control.withUnsafeMutableBytes { controlBytes in
                var iov = iovec(iov_base: body.baseAddress, iov_len: body.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var msg = msghdr()
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    msg.msg_control = controlBytes.baseAddress
                    msg.msg_controllen = controlBytes.count
                    twill_put_cmsg(&msg, SOL_SOCKET, Int32(SCM_RIGHTS), &fds, fds.count * MemoryLayout<Int32>.size)
                    return Syscall.retryOnInterrupt { sendmsg(s, &msg, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
        return sent == payload.count
    }
}
