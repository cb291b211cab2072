// Package cache is the host's tiered blob cache (the Alluxio idea, docs/dataplane.md):
// the blobs a host's guests read and write, kept in a memory tier and a disk tier with
// byte budgets, eviction policies, read and write policies, and metrics.
//
//   - Disk tier: verified files in <host.cache_dir>/blobs/sha256/<2 hex>/<64 hex> (mode
//     0644, directories 0755: QEMU, as user libvirt-qemu, reads hard links of them),
//     within host.cache_disk_bytes. Downloads go to <dir>/tmp/<hex>.part while being
//     hashed, resume from where a cut connection stopped, and are renamed in only after
//     the digest and size match; a mismatch is an error naming the blob, and nothing is
//     kept. The tier survives restarts: Open rebuilds its index from the files, hashing
//     those up to 4 MiB at once and larger ones before their first use; corrupt or
//     partial files are removed with a warning.
//   - Memory tier: the bytes of small blobs (at most host.cache_memory_bytes/8 each)
//     within host.cache_memory_bytes.
//   - Eviction: per tier, by a Policy: LRU, or LRFU (Lee et al.) with λ =
//     host.cache_lrfu_lambda over a logical clock of references. Entries in use (being
//     linked, read, uploaded) and outputs not yet uploaded are pinned and never evicted;
//     when pins leave no room the error wraps ErrFull and says what to do.
//   - Reads: Cache.Link makes a path hold a blob: a hard link from the disk tier (zero
//     copy; a copy when the path is on another filesystem), the file written from the
//     memory tier, or a fetch from the Source (one per blob however many ask at once).
//     Read policies: "cache", "no-cache", "promote" (see the Read* constants).
//   - Writes: Cache.Ingest takes an output file in, hashing it, and uploads it to the Sink
//     at once ("through") or journals it in <dir>/pending and lets Cache.Run upload it
//     with retries, also after a restart ("async").
//   - Sources: Shaped wraps the Source and Sink so every transfer is shaped by a
//     bwshare.Shaper in the class its context names. HTTPSource reads the blob HTTP API;
//     PeerSource (host.peer_fetch) takes a blob from a peer host's cache when the peer
//     holds it and is not measured slower than the server, and goes on from the server
//     where a peer fails mid-transfer; a fetch that does not match its digest after a
//     peer served bytes is fetched again from the server alone. PeerStore is the
//     read-only view of the disk tier a host serves to its peers.
//
// Cache.Largest(n) lists the digests of the n largest blobs held or being fetched: the
// host daemon sends it with each status (hostd.CacheSummaryBlobs = 1024), and again soon
// after Cache.Changes signals a change of that set, so the server places tasks near their
// inputs.
//
// Metrics: paddock_host_cache_hits_total{tier}, paddock_host_cache_misses_total,
// paddock_host_cache_evictions_total{tier}, paddock_host_cache_bytes{tier},
// paddock_host_cache_fetched_bytes_total, paddock_host_cache_pending_uploads,
// paddock_host_cache_upload_errors_total.
//
// The tests use real files in temporary directories and an in-memory Source and Sink.
// Two need more and skip without it (or fail under PADDOCK_REQUIRE_VM=1): the full-disk
// test mounts a 256 KiB tmpfs (root), the cross-filesystem test needs /dev/shm on another
// filesystem than $TMPDIR. The trace test checks the hit ratios of LRU and LRFU on a Zipf
// sequence against a reference implementation and prints them:
//
// TestBandwidthShares fetches three 256 MiB blobs over HTTP on loopback under a 90 MB/s
// cap and prints each class's throughput; TestPeerFetchFallsBackWhenPeerDies kills a real
// peer process (this test binary re-executed) mid-transfer:
//
//	go test -v -run 'Trace|BandwidthShares|Peer' ./hostd/cache/
//	go test -run '^$' -bench . ./hostd/cache/
package cache
