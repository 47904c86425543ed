import Testing
import TwillAddress

@testable import TwillDatapath

@Suite("IPv4Header")
struct IPv4HeaderTests {
    let a = IPv4Address(198, 18, 1, 1)
    let b = IPv4Address(198, 18, 2, 1)

    func parse(_ bytes: [UInt8], verify: Bool = false) -> Result<IPv4Header, IPv4Header.Rejection> {
        bytes.withUnsafeBytes { raw in
            do throws(IPv4Header.Rejection) { return .success(try IPv4Header(parsing: raw, verifyChecksum: verify)) } catch {
                return .failure(error)
            }
        }
    }

    @Test("a valid packet's fields are read")
    func valid() throws {
        let packet = Packets.ipv4(source: a, destination: b, ttl: 17, protocolNumber: 6, payload: [1, 2, 3])
        let header = try parse(packet, verify: true).get()
        #expect(header.headerLength == 20)
        #expect(header.totalLength == 23)
        #expect(header.ttl == 17)
        #expect(header.protocolNumber == 6)
        #expect(header.source == a)
        #expect(header.destination == b)
        #expect(header.isFirstFragment)
    }

    @Test("options extend the header length")
    func options() throws {
        let packet = Packets.ipv4(source: a, destination: b, options: [1, 1, 1, 0])
        #expect(try parse(packet).get().headerLength == 24)
    }

    @Test("fragment offset is read without the flags")
    func fragments() throws {
        let first = Packets.ipv4(source: a, destination: b, moreFragments: true)
        #expect(try parse(first).get().isFirstFragment)
        let later = Packets.ipv4(source: a, destination: b, fragmentOffset: 185)
        #expect(try parse(later).get().fragmentOffset == 185)
        #expect(try !parse(later).get().isFirstFragment)
    }

    @Test("every rejection reason")
    func rejections() {
        let good = Packets.ipv4(source: a, destination: b)
        #expect(parse([]) == .failure(.tooShort))
        #expect(parse(Array(good[0..<19])) == .failure(.tooShort))
        var v6 = good
        v6[0] = 0x65
        #expect(parse(v6) == .failure(.notVersion4))
        var ihl4 = good
        ihl4[0] = 0x44
        #expect(parse(ihl4) == .failure(.headerLengthTooSmall))
        var ihl15 = Array(good[0..<20])
        ihl15[0] = 0x4F
        ihl15[2] = 0
        ihl15[3] = 20
        #expect(parse(ihl15) == .failure(.headerBeyondBuffer))
        var longer = good
        longer[3] &+= 1
        #expect(parse(longer) == .failure(.totalLengthMismatch))
        var shorter = good
        shorter[3] &-= 1
        #expect(parse(shorter) == .failure(.totalLengthMismatch))
        var belowHeader = Array(good[0..<24])
        belowHeader[0] = 0x46
        belowHeader[2] = 0
        belowHeader[3] = 24
        #expect(parse(belowHeader) != .failure(.totalLengthMismatch)) // 24 == header: valid, empty payload
        var trailing = good
        trailing.append(0)
        #expect(parse(trailing) == .failure(.totalLengthMismatch))
        var corrupt = good
        corrupt[15] ^= 1
        #expect(parse(corrupt) != .failure(.badHeaderChecksum)) // not checked unless asked
        #expect(parse(corrupt, verify: true) == .failure(.badHeaderChecksum))
    }

    @Test("TTL 1 and 0 are not decremented (the packet must be dropped)")
    func ttlExpiry() {
        for ttl: UInt8 in [0, 1] {
            var packet = Packets.ipv4(source: a, destination: b, ttl: ttl)
            let before = packet
            #expect(!packet.withUnsafeMutableBytes { IPv4Header.decrementTTL($0.baseAddress!) })
            #expect(packet == before)
        }
        var two = Packets.ipv4(source: a, destination: b, ttl: 2)
        #expect(two.withUnsafeMutableBytes { IPv4Header.decrementTTL($0.baseAddress!) })
        #expect(two[8] == 1)
    }

    @Test("drop reasons have distinct metric names")
    func dropReasonNames() {
        let names = DropReason.allCases.map(\.description)
        #expect(Set(names).count == names.count)
        #expect(DropReason.allCases.map(\.rawValue) == Array(0..<DropReason.allCases.count))
    }
}
