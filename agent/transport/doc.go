// Package transport is the byte stream the agent's gRPC session runs over: a
// virtio-serial port inside a guest (the port named org.paddock.agent.0, which
// libvirt exposes on the host as a unix socket), or TCP outside one; plus the
// host half of it.
//
// Everything on the wire is framed (frame.go): magic, type, session id,
// sequence number, length, crc32c of the payload and of the header. Every
// session starts with a handshake: the guest sends HELLO with a fresh random
// session id until the host ACKs that id (not a secret, only unique: drawn with
// getrandom(GRND_INSECURE), which never waits for the guest kernel's CRNG to be
// seeded — crypto/rand did, ~1.8 s in a fresh TCG guest without an RNG device;
// a restored guest reseeds its RNG from the host before its first HELLO); the host, whenever it (re)connects,
// first sends RESYNC (with enough padding to flush a half-received frame), then
// discards everything — the agent's boot-time "PADDOCK-AGENT READY" line, stale
// bytes a virtio-serial port kept from the previous connection, frames of old
// sessions — until a valid HELLO. Frames of any other session are dropped; a
// RESYNC, a new HELLO, a CLOSE, garbage or a sequence gap ends the current
// session, so a host-side reconnect can never splice two sessions' bytes
// together. A guest cannot count on seeing the host disconnect (a virtio port
// only returns EOF while no host is attached): Options.EOFIsTransient makes it
// keep reading.
//
// Before any frame, a guest restored from a snapshot (warm start) exchanges two text
// lines with the host on the same port: the host sends
// "PADDOCK-IDENTITY id=<guest name> seed=<64 hex digits>\n", and the agent answers with
// a second ready line, "PADDOCK-AGENT READY … id=<guest name> nonce=<32 hex digits>\n",
// after reseeding the kernel RNG with the seed. Only then does framing start, as above
// (the host's RESYNC skips both lines like any pre-session bytes). agent/identity.go
// has the details; the host side is vmpool.SocketConnector.WaitReadyAs.
//
// A session is a net.Conn: the agent gives Guest.Dial to grpc.WithContextDialer
// (gRPC redials after a session ends, which starts a new one), and the server
// side serves gRPC on a Listener fed with raw connections (ServeConn) or
// wrapping a TCP listener (Listen).
//
// ServerList dials one of several server replicas over TCP, each time starting after
// the one it reached last, so an agent whose server died reconnects to another.
//
// Unit tests run over an in-memory model of a virtio port that keeps stale bytes
// across host reconnects: go test ./agent/transport. The in-guest test boots a
// guest with a real virtio-serial port (needs libvirt, a kernel and busybox;
// PADDOCK_REQUIRE_VM=1 turns its skip into a failure):
//
//	go test -count=1 -run Guest -v ./agent/transport
package transport
