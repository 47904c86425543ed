import TwillSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// systemd's sd_notify protocol without libsystemd: datagrams to the unix socket named in
/// NOTIFY_SOCKET ("@name" is an abstract socket). Does nothing when not run by systemd.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    /// Half of WATCHDOG_USEC: how often to send WATCHDOG=1; nil when no watchdog is set.
    public let watchdogInterval: Duration?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0 {
            // WATCHDOG_PID, when set, must name us; otherwise the watchdog is someone else's.
            if let pid = environment["WATCHDOG_PID"].flatMap(Int32.init), pid != getpid() {
                watchdogInterval = nil
            } else {
                watchdogInterval = .microseconds(Int64(usec / 2))
            }
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends `state` (e.g. "READY=1\nSTATUS=..."); returns false when there is no socket or
    /// the send failed (systemd then times the service out, which the log will explain).
    @discardableResult
    public func notify(_ state: String) -> Bool {
        guard let path = socketPath else { return false }
        return SystemdNotifySocket.send(state, to: path)
    }
}
