// Package hostd is the host daemon (`paddock host`): it glues the hypervisor, the image
// store, the pools (vmpool), the host load monitor (vmpool/hostload) and the link with
// the server together.
//
// The link is one gRPC connection to the server's cluster port with mutual TLS (the
// host's certificate names the host; package internal/pki makes dev certificates). On
// it the daemon keeps a control stream (api/host/v1 HostService.Control): it registers
// (host id, CPUs, memory, acceleration, pools), reports load, pools, guests and the host
// cache's summary (cache.Cache.Largest) every status interval, and again within
// SummaryMinGap when the cache's summary changed (cache.Cache.Changes), and tells the server at once when a guest is gone (the server
// requeues that guest's tasks); the server sends the backlog by task type (fed to
// vmpool.Counts, which drives scale-up) and a TaskEvent whenever a task starts or ends
// on one of the host's guests (fed to Manager.TaskStarted/TaskFinished, so idle
// timeouts and max_tasks_per_vm recycling work). Right after registering, the server
// sends a TaskSnapshot of the leases the host's guests hold: the daemon replaces its
// per-guest busy state with it (Manager.SyncTasks), stages the inputs of leases it has
// not staged and removes the staged files of leases no longer held (resync.go), so
// TaskEvents lost with a broken or overflowing stream leave nothing stale. Guest-gone
// news waits in a set keyed by guest name until the server has it (never dropped,
// resent after a reconnect); at start that includes every guest a previous run of the
// same host id left (vmpool destroys them), so a restart after a crash requeues their
// tasks at once. Serve reports each relayed agent session to the pools
// (vmpool.SessionReporter), which enforce host.guest_session_timeout.
//
// The relay (Daemon.Serve, the pools' vmpool.Relay): for each guest, the connection to
// its virtio-serial socket, positioned after the agent's ready line, gets the host half
// of agent/transport; each session the guest starts is carried to the server as one
// Relay stream on the same connection, named by request metadata with the guest's name
// and pool as this host knows them (the host id comes from the certificate). The
// server serves those streams to its agent service as connections whose peer is that
// guest, and refuses an agent that registers under any other id. Guests have no
// network interface. While the server is unreachable the pools keep their min_idle
// guests, the error is logged once per change, and the link is retried with backoff.
//
// The data path (docs/dataplane.md), when Config.Cache.Dir is set: the daemon opens
// the host cache (package hostd/cache) over the server's blob RPCs (link.Blobs:
// StatBlob, ReadBlob resumed where a cut stream broke, WriteBlob) and registers the
// capability "stage". A TaskEvent KIND_STARTED with inputs links each blob from the
// cache into <guest in-share>/<guestabi.LeaseDir>/<name> (the lease directory 0755,
// the files world-readable hard links: QEMU runs as another user), then writes the
// guestabi.Marker (a temporary name, renamed) and sends Staged; a blob the server does
// not have makes a marker error that is not retryable, a failed fetch one that is.
// KIND_FINISHED stops the lease's staging if it still runs and removes its directories
// from both shares. A Collect opens each output in <guest out-share>/<LeaseDir>
// without following symbolic links (openat with O_NOFOLLOW for the lease directory and
// the file, regular files only: the guest is untrusted), checks its size against the
// report and the sum against max_bytes, and ingests it through the descriptor it
// checked (the cache verifies the digest and uploads per write policy), then answers
// Collected. Stagings and collects run on goroutines of their own; their answers wait
// in an unbounded-in-practice outbox for the control stream's sender (resent on the
// next stream if one breaks; a Send stuck for a minute drops the stream).
//
// Metrics (Config.MetricsListen): the pools', the relay's, the host load gauges of
// vmpool/hostload, and per-NIC byte counters read from the kernel at each scrape
// (nicmetrics.go). Config.Ready says when the daemon serves (paddock host sends
// systemd READY=1 from it).
//
// Bandwidth shares and source choice (docs/dataplane.md): every fetch into the cache and
// every upload goes through a bwshare.Shaper (cache.Shaped) in the bandwidth class of
// its task (bwshare.Shaper.Classify of the tenant and task_class that TaskEvent and
// Collect carry), within host.bandwidth; the status's Load reports the link's use
// (paddock host ls, LINK). Under host.peer_fetch the cache's Source is a
// cache.PeerSource over host.peers and the server; with host.peer_listen the daemon
// serves its cache to peers read-only (cache.PeerStore over the blob HTTP API).
//
// Tests: unit-level tests use a fake hypervisor, and the data path runs against temp
// directories and a real cache over a fake server (go test ./hostd/ -run 'Stage|Collect|TransferClasses'); the integration tests boot real TCG
// guests (1 vCPU, 256 MiB, at most 3 at once) from an image holding the real
// paddock-agent and the test handler, with the real server in-process, and need root,
// libvirtd and virtlogd (`make setup`) and a kernel in /boot; they skip without them,
// or fail under PADDOCK_REQUIRE_VM=1:
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -v ./hostd/
//	sudo go test ./hostd/ -run '^$' -bench . -benchtime 2x
package hostd
