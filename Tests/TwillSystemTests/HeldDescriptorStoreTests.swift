import Foundation
import Testing
import TwillSystem
import TwillTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The holder a stopping agent leaves outside systemd: what it was given comes back to the
/// next store opened in the same network namespace, once, and the same open file (a write on
/// one end is read on the other). Runs in a network namespace of its own (the socket is
/// abstract, so scoped by namespace).
@Suite(.requiresRoot) struct HeldDescriptorStoreTests {
    @Test func aDescriptorGoesToTheHolderAndComesBack() async throws {
        try await withNamespaces(["\(uniqueTestPrefix())-held"]) { namespaces in
            let ns = namespaces[0]
            let binary = try twillBinary()
            try NetworkNamespace.run(inNamespace: ns.path) {
                var pipe: [Int32] = [-1, -1]
                #expect(Glibc.pipe(&pipe) == 0)
                let store = HeldDescriptorStore()
                #expect(store.untaken().isEmpty)
                store.keep(pipe[1], name: "test.pipe.0")
                close(pipe[1])
                #expect(store.start(executable: binary))
                let next = HeldDescriptorStore()
                #expect(next.untaken() == ["test.pipe.0"])
                let fd = try #require(next.take("test.pipe.0"))
                var byte: UInt8 = 42
                #expect(write(fd, &byte, 1) == 1)
                var got: UInt8 = 0
                #expect(read(pipe[0], &got, 1) == 1 && got == 42)
                close(fd)
                close(pipe[0])
                // Handed over once: no holder is left.
                #expect(HeldDescriptorStore().untaken().isEmpty)
            }
        }
    }
}
