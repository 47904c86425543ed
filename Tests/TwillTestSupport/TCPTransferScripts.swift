/// Python programs for byte-exact TCP transfers through an overlay under test (run them with
/// `python3 -c` or from a file, inside a namespace).
///
/// Both print one line, "<bytes> <sha256 hex>", of what they sent or received: a test compares
/// the two lines.
public enum TCPTransferScripts {
    /// argv: address (IPv4 or IPv6) port. Accepts one connection (60 s timeout), reads it to the end.
    public static let sink = #"""
        import hashlib, socket, sys
        s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)
        c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
        while True:
            b = c.recv(1 << 20)
            if not b: break
            h.update(b); n += len(b)
        print(n, h.hexdigest(), flush=True)
        """#

    /// argv: source-address destination port size. Connects (retrying for 10 s while the
    /// sink starts) and sends `size` pseudo-random bytes: a 1 MiB block from a fixed seed,
    /// rotated by a different amount for each MiB so no two chunks are alike. Waits for the
    /// sink to close, so everything has arrived when it exits.
    public static let source = #"""
        import hashlib, random, socket, sys, time
        src, dst, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        block = random.Random(11).randbytes(1 << 20); h = hashlib.sha256()
        for attempt in range(100):
            try:
                c = socket.create_connection((dst, port), timeout=60, source_address=(src, 0)); break
            except OSError:
                time.sleep(0.1)
        sent = 0; i = 0
        while sent < size:
            k = (i * 7919) % len(block); chunk = (block[k:] + block[:k])[: size - sent]
            c.sendall(chunk); h.update(chunk); sent += len(chunk); i += 1
        c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
        print(sent, h.hexdigest(), flush=True)
        """#
}
