#if canImport(Glibc)
import Glibc
#endif

/// Large zero-filled buffers that cost no memory until used.
///
/// `calloc` of a large block maps fresh pages, which the kernel hands out zeroed on first
/// touch, so a 4 MiB receive ring an idle node never fills stays out of its RSS; zeroing it
/// by hand (`initializeMemory`) would touch every page at once.
public enum ZeroedMemory {
    /// `byteCount` zero bytes, 16-byte aligned. Free with ``deallocate(_:)``.
    public static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        guard let p = calloc(1, max(byteCount, 1)) else { fatalError("out of memory allocating \(byteCount) bytes") }
        return p
    }

    public static func deallocate(_ pointer: UnsafeMutableRawPointer) { free(pointer) }
}
