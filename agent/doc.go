// Package agent is paddock-agent, the program inside each guest: PID 1 of a micro-VM
// (the init duties live in agent/pid1) or a service in a full OS image. It owns the
// agent's configuration format (Config, /etc/paddock/agent.json in an image), reads the
// image manifest (Manifest) and talks to the host over the virtio-serial port
// org.paddock.agent.0.
//
// Main does the PID-1 setup and supervision; Run opens the port, writes the ready
// line "PADDOCK-AGENT READY version=<v> boot_ms=<ms>", runs optional self-checks, and
// runs the session with the server (agent/session: gRPC over agent/transport) with the
// handlers as plugins/runner subprocesses. Handlers start on the first task of one of
// their types (handler_start: lazy, the default): the agent registers with the types the
// image manifest records, right after its ready line, and an idle guest runs no handler
// it has not needed. The first transport session's handshake starts right after the
// ready line, while the runner and the session are set up (dialEarly), so the agent
// registers 0.4–0.7 s after its ready line under TCG on a loaded host (2.1–2.5 s before).
// Every heartbeat reports the agent's own RSS and its running
// handlers' RSS (`paddock vm ls`). A TCP agent keeps the files of tasks whose
// blobs travel over its connection in data_dir (--data-dir).
//
// With paddock.warm=1 on the kernel command line (a warm-start template, vmpool
// warm_start snapshot) the agent starts its handlers before its ready line and then
// waits for the host's identity line: the host snapshots the guest while it waits, and
// each restored copy takes the id and RNG seed its host sends (identity.go), mounts the
// data shares, and writes a second ready line with its id and a fresh nonce.
//
// Unit tests: go test ./agent/... (CGO_ENABLED=0 works). TestStreamDataPathRealAgent
// runs the real agent binary and a real handler against an in-process server with a
// blob store. The PID-1 path is tested by booting a built image under libvirt:
//
//	PADDOCK_REQUIRE_VM=1 go test -count=1 -run Boot ./images
package agent
