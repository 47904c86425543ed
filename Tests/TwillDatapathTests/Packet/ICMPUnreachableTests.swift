import Testing
import TwillAddress

@testable import TwillDatapath

@Suite("ICMPUnreachable")
struct ICMPUnreachableTests {
    let tunAddress = IPv4Address(198, 18, 1, 0)
    let sender = IPv4Address(198, 18, 1, 1)
    let nowhere = IPv4Address(198, 18, 9, 9)

    func build(_ offender: [UInt8], answeringQueries: Bool = true) -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: ICMPUnreachable.maximumLength)
        let n = offender.withUnsafeBytes { raw in
            let header = try! IPv4Header(parsing: raw)
            return out.withUnsafeMutableBytes {
                ICMPUnreachable.build(offending: raw, header: header, source: tunAddress, into: $0, answeringQueries: answeringQueries)
            }
        }
        return Array(out[0..<n])
    }

    @Test("bytes match flannel's message for a UDP offender")
    func exactBytes() {
        let offender = Packets.ipv4(
            source: sender, destination: nowhere, ttl: 64, protocolNumber: 17,
            payload: Packets.udp(sourcePort: 0x1111, destinationPort: 0x2222, data: [9, 9, 9, 9]))
        let message = build(offender)
        #expect(message.count == 20 + 8 + 20 + 8)
        // IPv4 header: 45 00, length 56, ID 0, no fragment bits, TTL 8, ICMP, checksum, src, dst.
        #expect(Array(message[0..<10]) == [0x45, 0x00, 0x00, 56, 0, 0, 0, 0, 8, 1])
        #expect(Array(message[12..<16]) == [198, 18, 1, 0])
        #expect(Array(message[16..<20]) == [198, 18, 1, 1])
        #expect(message[0..<20].withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
        // ICMP: type 3 code 0, checksum, 4 unused zero bytes, then header + 8 bytes of the offender.
        #expect(message[20] == 3 && message[21] == 0)
        #expect(Array(message[24..<28]) == [0, 0, 0, 0])
        #expect(Array(message[28...]) == Array(offender[0..<28]))
        #expect(message[20...].withUnsafeBytes { InternetChecksum.checksum($0) } == 0)
        // The exact ICMP checksum, computed independently over the ICMP part.
        var icmp = Array(message[20...])
        icmp[2] = 0
        icmp[3] = 0
        let expected = icmp.withUnsafeBytes { InternetChecksum.referenceChecksum($0) }
        #expect(UInt16(message[22]) << 8 | UInt16(message[23]) == expected)
    }

    @Test("the offender's options are quoted with its header")
    func options() {
        let offender = Packets.ipv4(
            source: sender, destination: nowhere, payload: Array(repeating: 7, count: 30), options: [1, 1, 1, 0, 1, 1, 1, 0])
        let message = build(offender)
        #expect(message.count == 28 + 28 + 8)
        #expect(Array(message[28...]) == Array(offender[0..<36]))
    }

    @Test("a short offender is quoted whole")
    func shortOffender() {
        let offender = Packets.ipv4(source: sender, destination: nowhere, payload: [1, 2, 3])
        #expect(Array(build(offender)[28...]) == offender)
    }

    @Test("never for ICMP errors or non-first fragments; ICMP queries are answered")
    func suppressed() {
        func icmp(_ type: UInt8) -> [UInt8] {
            Packets.ipv4(source: sender, destination: nowhere, protocolNumber: 1, payload: [type, 0, 0, 0, 0, 0, 0, 0])
        }
        for errorType: UInt8 in [3, 4, 5, 11, 12] { #expect(build(icmp(errorType)).isEmpty, "type \(errorType)") }
        #expect(build(Packets.ipv4(source: sender, destination: nowhere, protocolNumber: 1, payload: [])).isEmpty)
        for queryType: UInt8 in [8, 0, 13] { #expect(!build(icmp(queryType)).isEmpty, "type \(queryType)") }
        #expect(build(Packets.ipv4(source: sender, destination: nowhere, fragmentOffset: 3)).isEmpty)
        #expect(
            build(
                Packets.ipv4(source: sender, destination: nowhere, protocolNumber: 1, payload: [8, 0, 0, 0, 0, 0, 0, 0], fragmentOffset: 3)
            ).isEmpty)
        #expect(!build(Packets.ipv4(source: sender, destination: nowhere, moreFragments: true)).isEmpty)
    }

    @Test("flannel's exact rule: no ICMP packet is ever answered")
    func flannelRule() {
        let echo = Packets.ipv4(source: sender, destination: nowhere, protocolNumber: 1, payload: [8, 0, 0, 0, 0, 0, 0, 0])
        #expect(build(echo, answeringQueries: false).isEmpty)
        #expect(!build(Packets.ipv4(source: sender, destination: nowhere), answeringQueries: false).isEmpty)
    }
}
