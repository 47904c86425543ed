import Testing

@testable import TwillEtcd

@Suite struct LineSplitterTests {
    func lines(_ chunks: [String]) throws -> [String] {
        var s = LineSplitter()
        var out: [String] = []
        for c in chunks {
            try s.append(Array(c.utf8)) { out.append(String(decoding: $0, as: UTF8.self)) }
        }
        return out
    }

    @Test func wholeMessagesPerChunk() throws {
        #expect(try lines(["{\"a\":1}\n", "{\"b\":2}\n"]) == ["{\"a\":1}", "{\"b\":2}"])
    }

    @Test func messageSplitAcrossChunks() throws {
        #expect(try lines(["{\"a\"", ":1}", "\n{\"b\":", "2}\n"]) == ["{\"a\":1}", "{\"b\":2}"])
    }

    @Test func severalMessagesInOneChunk() throws {
        #expect(try lines(["1\n2\n3\n4"]) == ["1", "2", "3"])
    }

    @Test func everyByteItsOwnChunk() throws {
        let text = "{\"result\":{}}\n\n{\"x\":[1,2]}\r\n"
        #expect(try lines(text.map { String($0) }) == ["{\"result\":{}}", "{\"x\":[1,2]}\r"])
    }

    @Test func remainderKeepsPartialLine() throws {
        var s = LineSplitter()
        try s.append(Array("abc\nde".utf8)) { _ in }
        #expect(s.remainder == Array("de".utf8))
    }
}
