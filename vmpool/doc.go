// Package vmpool owns the pools of guests on one host (the host daemon's core).
//
// A Manager (New, Run) runs N pools (PoolConfig: name, image, vcpus, memory, min_idle,
// max, idle_timeout, max_tasks_per_vm, task_types, scratch_mib). Each pool has a
// reconcile loop, woken every Config.Tick, by hypervisor lifecycle events and by task
// starts/ends, that keeps the guests matching what the pool wants:
//
//   - it keeps min_idle guests booted and idle (warm), and scales up for the server's
//     backlog of the pool's task types (Backlog; Counts is the in-memory holder the
//     server feed writes to), never beyond max guests in any state. The pool's task
//     types are its task_types, or, when it lists none, every task type the image's
//     handlers serve, as the image manifest records them (images.Manifest.TaskTypes:
//     one handler binary may serve several types; handler names are not task types);
//   - it stops idle guests after idle_timeout, oldest idle first, never below min_idle
//     (and not while the backlog wants them);
//   - it recycles a guest once it has started max_tasks_per_vm tasks (TaskStarted puts
//     it in draining; it is destroyed when its last task ends — 1 gives every task a
//     fresh guest);
//   - it replaces guests that crash, are destroyed from outside, vanish from the
//     hypervisor's list, whose stream ends, or that write no ready line within
//     boot_timeout; consecutive failed boots back off exponentially (boot_backoff
//     doubling up to max_boot_backoff, reset by a good boot);
//   - at most Config.MaxConcurrentStarts guests (host.max_concurrent_starts, default
//     DefaultMaxConcurrentStarts, over all pools) start at once (starts.go): a guest
//     takes a slot before its domain is created or restored and gives it back at its
//     ready line or failure (a snapshot template holds one from its boot to its save);
//     guests wanted beyond it stay booting, without a domain, until a slot frees
//     (paddock_vmpool_starts_in_flight, paddock_vmpool_starts_waiting);
//   - scale-up for the backlog stops while the host is above its thresholds (host load
//     from package hostload: cpu_percent, min_mem_available_mib, nic_bytes_per_sec), or
//     has no fresh load sample; the min_idle floor is kept regardless. The pool logs the
//     reason when it changes (msg="pool not scaling up" reason=cpu …) and exports it as
//     paddock_vmpool_scale_up_blocked{pool,reason}.
//
// Every guest is named <prefix><pool>-<8 hex digits>, has its own 0755 directory under
// Config.RunDir (channel socket agent.sock, console.log, scratch qcow2 overlay), no
// network interface, and the labels paddock.dev/pool and paddock.dev/host. Unless
// Config.DisableShares is set, the directory also holds the guest's two shared
// directories (docs/dataplane.md), exported over virtio-9p: in/ (root's, 0755,
// read-only in the guest, tag guestabi.InTag) where the host daemon stages task inputs,
// and out/ (owned by QEMU's user, Config.ShareUser, group root, 0700; tag
// guestabi.OutTag) where the guest writes outputs; GuestRef.InDir/OutDir and
// Manager.Guest give their paths. At start the
// Manager destroys every domain labelled with its HostID and empties RunDir (a restarted
// daemon does not adopt guests: their sessions cannot be resumed anyway), reporting
// each such guest, and each guest directory whose domain is already gone, through
// WithGuestGone (so the server requeues their tasks at once, not at lease expiry); at
// the end of Run it destroys all its guests.
//
// Health (health.go): with a Relay that reports sessions (SessionReporter; the host
// daemon's calls Manager.SessionOpened/SessionClosed for every agent session it
// relays), a ready guest whose agent has no session for Config.GuestSessionTimeout
// (host.guest_session_timeout, default 1m) — none since its ready line, or none since
// its last one closed while the domain still runs — is destroyed, reported gone and
// replaced (paddock_vmpool_guests_lost_total{reason="session"}; a failed boot if it
// never ran a task). The pool's clock times it, so unit tests drive it with a fake one.
//
// Resync: Manager.SyncTasks replaces the per-guest task counts TaskStarted and
// TaskFinished built with the server's view (the host daemon calls it with each
// TaskSnapshot, after its link with the server broke and events may have been lost).
//
// Readiness: SocketConnector dials the guest's channel socket and reads, one byte at a
// time, up to the agent's "PADDOCK-AGENT READY …" line (agent.ReadyPrefix); the guest
// is then idle. The same connection, positioned just after that line, goes to the Relay
// (the host daemon's, hostd.Daemon.Serve: the host side of agent/transport, which sends
// RESYNC and skips everything before a valid HELLO, then relays each session to the
// server; DrainRelay when none is set). A Relay that returns an error marks the guest
// unhealthy. Guests get the pool's TCG translation cache (tb_cache_mib, default
// DefaultTBCacheMiB; ignored under KVM) and the idle-friendly DefaultCmdline unless the
// pool sets cmdline. Every guest's kernel command line ends with paddock.id=<guest name>
// (GuestCmdline): its agent registers under that id, which the server checks against
// the name the host attests. WithGuestGone tells the host daemon when a guest is gone.
//
// Warm start (warm.go, PoolConfig.WarmStart "snapshot"; default "cold"): the pool boots
// a template guest with agent.CmdlineWarmKey=1, saves its state through
// hypervisor.Snapshotter into Config.SnapshotDir/<pool>/ beside a manifest (image
// digest, pool settings hash, QEMU and libvirt versions, state size and sha256), and
// restores new guests from it, each with its own name, UUID, socket, shares and disk
// overlay; SocketConnector.WaitReadyAs then hands the guest its identity and an RNG seed
// (agent.Identity) and checks the id in its second ready line. A snapshot a previous
// run left on disk is checked (manifest, state size and sha256) when the pool starts,
// before its first guest, so a restarted daemon restores from the first guest. Until
// the snapshot is ready, and whenever it fails (mismatch, truncated or corrupt state, failed save or
// restore, no ready line after restore), guests boot cold, the snapshot is dropped and
// rebuilt after retry_interval. Cold is the default because a snapshot costs disk space
// per pool and taints domains with QMP passthrough; docs/operations.md "Warm start".
//
// A pool with a bad configuration (Validate: names, ranges, min_idle > max, …; at start:
// an image that is not in the store, memory below RequiredMemoryMiB of the image, a task
// type no handler of the image serves, an image built before manifests recorded task
// types) is logged, shown by Pools with its error and
// paddock_vmpool_up 0; the other pools run. A pool whose image is missing retries every
// retry_interval.
//
// Tests: unit tests run the reconcile logic on hypervisortest.Fake with a fake clock,
// connector, backlog and load (go test ./vmpool/). The integration tests boot real TCG
// guests under libvirt from an image built from the real paddock-agent (1 vCPU,
// 256 MiB, at most 3 at once); they need root, libvirtd and virtlogd (`make setup`) and
// a kernel in /boot, and skip without them — or fail under PADDOCK_REQUIRE_VM=1:
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 ./vmpool/...
//
// Scale-up decision → ready, beside a raw `virsh create` of the same image → ready line:
//
//	sudo go test ./vmpool/ -run '^$' -bench ScaleUpToReady -benchtime 3x
//
// Warm start: ten clones of one snapshot registering and running tasks through a real
// server is hostd's TestWarmStartTenClones; restored vs cold-booted vs a raw restore is
//
//	sudo go test ./vmpool/ -run '^$' -bench WarmStart -benchtime 3x
package vmpool
