#if canImport(Glibc)
import Glibc
#endif

/// The loop of one engine thread: waits in poll for its pumps' descriptors (and the stop
/// eventfd), then runs the ready pumps in turns until every one is drained.
///
/// With one thread per queue (the default) a worker serves both directions: TCP data one
/// way and its ACKs the other are handled in one wakeup instead of waking a second thread,
/// which on a small node costs more than the packets themselves (context switches and
/// cross-CPU wakeups). With ``UDPEngineConfiguration/threadsPerQueue`` 2 each direction has
/// its own worker, for nodes with more cores than queues.
enum QueueWorker {
    /// TUN reads per outbound turn and recvmmsg batches per inbound turn: small enough that
    /// neither direction waits long behind the other.
    static let outboundBudget = 16
    static let inboundBudget = 2

    /// Runs until `running` turns false or the stop eventfd fires. Either pump may be nil.
    static func serve(outbound: OutboundPump?, inbound: InboundPump?, wakeFD: Int32, running: () -> Bool) {
        var fds: [pollfd] = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        let outboundIndex = outbound.map { pump in
            fds.append(pollfd(fd: pump.fileDescriptor, events: Int16(POLLIN), revents: 0))
            return fds.count - 1
        } ?? -1
        let inboundIndex = inbound.map { pump in
            fds.append(pollfd(fd: pump.fileDescriptor, events: Int16(POLLIN), revents: 0))
            return fds.count - 1
        } ?? -1
        let count = nfds_t(fds.count)
        let closed = Int16(POLLNVAL)
        let tunGone = Int16(POLLERR | POLLNVAL | POLLHUP)
        while running() {
            let ready = poll(&fds, count, 1000)
            if ready < 0 && errno != EINTR { return }
            if fds[0].revents != 0 { return }
            if ready <= 0 {
                // Idle: publish the current snapshot so retired ones can be freed.
                outbound?.refreshSnapshot()
                inbound?.refreshSnapshot()
                continue
            }
            var outboundReady = false, inboundReady = false
            if let outbound {
                let events = fds[outboundIndex].revents
                if events & tunGone != 0 { return }
                outboundReady = events != 0
                if !outboundReady { outbound.refreshSnapshot() }
            }
            if let inbound {
                let events = fds[inboundIndex].revents
                if events & closed != 0 { return }
                // POLLERR too: the receive call clears a pending socket error.
                inboundReady = events != 0
                if !inboundReady { inbound.refreshSnapshot() }
            }
            while (outboundReady || inboundReady) && running() {
                if outboundReady, let outbound { outboundReady = outbound.run(budget: outboundBudget) }
                if inboundReady, let inbound { inboundReady = inbound.run(budget: inboundBudget) }
            }
        }
    }
}
