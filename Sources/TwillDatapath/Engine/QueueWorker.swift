import TwillSystem

#if canImport(Glibc)
import Glibc
#endif

/// One direction of a queue, as its thread's loop sees it.
protocol QueuePump: AnyObject {
    /// The descriptor to wait on for POLLIN (non-blocking).
    var fileDescriptor: Int32 { get }
    /// Handles at most `budget` units of work (reads, batches) without blocking; true if the
    /// budget ran out and more may be waiting, false once the descriptor was found empty.
    func run(budget: Int) -> Bool
    /// Publishes the snapshot generation the pump holds (see ``PacketEngine``), when idle.
    func refreshSnapshot()
}

extension OutboundPump: QueuePump {}
extension InboundPump: QueuePump {}

/// The loop of one engine thread: waits in poll for its pumps' descriptors (and the stop
/// eventfd), then runs the ready pumps in turns until every one is drained.
///
/// With one thread per queue (the default) a worker serves both directions: TCP data one
/// way and its ACKs the other are handled in one wakeup instead of waking a second thread,
/// which on a small node costs more than the packets themselves (context switches and
/// cross-CPU wakeups). With ``EngineConfiguration/threadsPerQueue`` 2 each direction has
/// its own worker, for nodes with more cores than queues.
enum QueueWorker {
    /// TUN reads per outbound turn and recvmmsg batches per inbound turn: small enough that
    /// neither direction waits long behind the other.
    static let outboundBudget = 16
    static let inboundBudget = 2

    /// Runs until `running` turns false or the stop eventfd fires (then returns true), or
    /// until poll fails or a descriptor is closed or fails under it (the TUN queue gone):
    /// then returns false, and the queue no longer carries traffic. Either pump may be nil.
    static func serve<Outbound: QueuePump, Inbound: QueuePump>(
        outbound: Outbound?, inbound: Inbound?, wakeFD: Int32,
        outboundBudget: Int = outboundBudget, inboundBudget: Int = inboundBudget, running: () -> Bool
    ) -> Bool {
        var fds: [pollfd] = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        let outboundIndex =
            outbound.map { pump in
                fds.append(pollfd(fd: pump.fileDescriptor, events: Int16(POLLIN), revents: 0))
                return fds.count - 1
            } ?? -1
        let inboundIndex =
            inbound.map { pump in
                fds.append(pollfd(fd: pump.fileDescriptor, events: Int16(POLLIN), revents: 0))
                return fds.count - 1
            } ?? -1
        let count = nfds_t(fds.count)
        let closed = Int16(POLLNVAL)
        let tunGone = Int16(POLLERR | POLLNVAL | POLLHUP)
        while running() {
            let ready = Syscall.retryOnInterrupt { poll(&fds, count, 1000) }
            if ready < 0 { return false }
            if fds[0].revents != 0 { return true }
            if ready <= 0 {
                // Idle: publish the current snapshot so retired ones can be freed.
                outbound?.refreshSnapshot()
                inbound?.refreshSnapshot()
                continue
            }
            var outboundReady = false
            var inboundReady = false
            if let outbound {
                let events = fds[outboundIndex].revents
                if events & tunGone != 0 { return false }
                outboundReady = events != 0
                if !outboundReady { outbound.refreshSnapshot() }
            }
            if let inbound {
                let events = fds[inboundIndex].revents
                if events & closed != 0 { return false }
                // POLLERR too: the receive call clears a pending socket error.
                inboundReady = events != 0
                if !inboundReady { inbound.refreshSnapshot() }
            }
            // The first round serves what poll reported. While either side still has more,
            // every round tries both: a side that was idle at poll time (say, the ACKs of
            // the download being received) must not wait until the busy side runs dry.
            var firstRound = true
            while (outboundReady || inboundReady) && running() {
                let runOutbound = outboundReady || !firstRound
                let runInbound = inboundReady || !firstRound
                firstRound = false
                outboundReady = false
                inboundReady = false
                if runOutbound, let outbound { outboundReady = outbound.run(budget: outboundBudget) }
                if runInbound, let inbound { inboundReady = inbound.run(budget: inboundBudget) }
            }
        }
        return true
    }
}
