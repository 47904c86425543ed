import Foundation
import Testing
import TwillAddress
import TwillTestSupport

@testable import TwillLease

@Suite struct SubnetPickerTests {
    @Test func picksOnlyFreeAlignedInRangeSubnets() throws {
        let config = try NetworkConfig(
            json: Data(#"{"Network":"10.10.0.0/20","SubnetLen":26,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.14.192"}"#.utf8))
        let all = Array(try IPv4Network("10.10.0.0/20")!.subnets(length: 26))
        for seed in 0..<300 {
            var rng = SplitMix64(seed: UInt64(seed))
            let taken = Set(all.filter { _ in Bool.random(using: &rng) })
            guard let pick = SubnetPicker.pick(config, taken: taken, using: &rng) else {
                #expect(all.filter { config.fits($0) }.allSatisfy { taken.contains($0) })
                continue
            }
            #expect(!taken.contains(pick), "seed \(seed)")
            #expect(config.fits(pick), "seed \(seed)")
            #expect(pick.prefixLength == 26 && pick.address.rawValue % 64 == 0, "seed \(seed)")
        }
    }

    @Test func scansUpwardFromSubnetMinAtMostAHundred() throws {
        let config = try NetworkConfig(json: Data(#"{"Network":"10.0.0.0/8"}"#.utf8))
        let free = SubnetPicker.freeSubnets(config, taken: [IPv4Network("10.0.2.0/24")!])
        #expect(free.count == 100)
        #expect(free.first == IPv4Network("10.0.1.0/24"))
        #expect(!free.contains(IPv4Network("10.0.2.0/24")!))
        #expect(free.last == IPv4Network("10.0.101.0/24"))
    }

    @Test func noneFreeGivesNilAndUsage() throws {
        let config = try NetworkConfig(json: Data(#"{"Network":"10.0.0.0/28","SubnetLen":30}"#.utf8))
        let taken = Set(try IPv4Network("10.0.0.0/28")!.subnets(length: 30))
        var rng = SplitMix64(seed: 1)
        #expect(SubnetPicker.pick(config, taken: taken, using: &rng) == nil)
        let usage = SubnetPicker.usage(config, taken: taken)
        #expect(usage.total == 3 && usage.taken == 3)
    }
}
