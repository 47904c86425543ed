import CTwillSystem
import Testing

@testable import TwillDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A pump over a pipe: readable while the pipe holds bytes; each turn does what `work` says.
final class PipePump: QueuePump {
    let readEnd: Int32
    let writeEnd: Int32
    var fileDescriptor: Int32 { readEnd }
    var turns = 0
    var refreshes = 0
    /// Called once per turn with the turn number (from 1); returns the turn's result.
    var work: (Int) -> Bool = { _ in false }

    init() {
        var ends: [Int32] = [0, 0]
        precondition(pipe(&ends) == 0)
        readEnd = ends[0]
        writeEnd = ends[1]
        _ = fcntl(readEnd, F_SETFL, O_NONBLOCK)
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }

    func fill() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readEnd, &buffer, 64) > 0 {}
    }

    func run(budget: Int) -> Bool {
        turns += 1
        return work(turns)
    }

    func refreshSnapshot() { refreshes += 1 }
}

@Suite("QueueWorker (one thread, both directions)")
struct QueueWorkerTests {
    @Test("a busy direction does not starve the other: an idle side is tried again while the busy one has more")
    func fairness() {
        let outbound = PipePump()
        let inbound = PipePump()
        let busyTurns = 1000
        var inboundServedAtOutboundTurn: Int?
        // Outbound always has more for 1000 turns; data for the inbound side arrives during
        // the first of them, after poll has already reported only the outbound side ready.
        outbound.work = { turn in
            if turn == 1 { inbound.fill() }
            if turn == busyTurns { outbound.drain() }
            return turn < busyTurns
        }
        inbound.work = { _ in
            var buffer = [UInt8](repeating: 0, count: 8)
            if read(inbound.readEnd, &buffer, 8) > 0, inboundServedAtOutboundTurn == nil {
                inboundServedAtOutboundTurn = outbound.turns
            }
            return false
        }
        outbound.fill()
        let wake = twill_eventfd()
        defer { close(wake) }
        let stoppedCleanly = QueueWorker.serve(outbound: outbound, inbound: inbound, wakeFD: wake) {
            outbound.turns < busyTurns || inboundServedAtOutboundTurn == nil
        }
        #expect(stoppedCleanly)
        #expect(outbound.turns == busyTurns)
        let servedAt = inboundServedAtOutboundTurn ?? Int.max
        #expect(servedAt <= 2, "the inbound side waited for \(servedAt) outbound turns")
    }

    @Test("the stop eventfd ends the loop cleanly; a descriptor closed under it ends it as a failure")
    func exits() {
        let wake = twill_eventfd()
        defer { close(wake) }
        let idle = PipePump()
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
        #expect(QueueWorker.serve(outbound: idle, inbound: PipePump?.none, wakeFD: wake) { true })
        var drained: UInt64 = 0
        _ = read(wake, &drained, 8)

        // A descriptor number that is not open: poll reports POLLNVAL.
        final class ClosedPump: QueuePump {
            var fileDescriptor: Int32 { 1_000_000 }
            func run(budget: Int) -> Bool { false }
            func refreshSnapshot() {}
        }
        #expect(!QueueWorker.serve(outbound: OutboundPump?.none, inbound: ClosedPump(), wakeFD: wake) { true })
        #expect(!QueueWorker.serve(outbound: ClosedPump(), inbound: InboundPump?.none, wakeFD: wake) { true })
    }
}
