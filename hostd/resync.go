package hostd

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/vmpool"
)

// applySnapshot resyncs the daemon with the server's TaskSnapshot (sent on every
// control stream, right after Registered): the pools' per-guest task counts are
// replaced by the snapshot's, and the data path stages what it lacks and removes what
// the snapshot no longer holds. It runs on the control stream's receiving goroutine,
// before any TaskEvent that follows the snapshot.
func (d *Daemon) applySnapshot(ctx context.Context, sn *hostv1.TaskSnapshot) {
	running, assigned := map[string]int{}, map[string]int{}
	for _, e := range sn.GetRunning() {
		running[e.GetGuest()]++
	}
	for g, n := range sn.GetAssigned() {
		assigned[g] = int(n)
	}
	d.mgr.SyncTasks(running, assigned)
	var guests []vmpool.GuestRef
	for _, g := range d.mgr.Snapshot() {
		if r, ok := d.mgr.Guest(g.Name); ok {
			guests = append(guests, r)
		}
	}
	staged, removed := d.dp.resync(ctx, sn.GetRunning(), guests)
	d.log.Info("resynced with the server's task snapshot", "leases", len(sn.GetRunning()), "busy_guests", len(running), "staging", staged, "removed", removed)
}

// resync brings the data path in line with running, the leases the server says the
// host's guests hold: it stages the inputs of each lease of a guest it knows that is
// neither staged (its marker is in place) nor being staged, and, for each of guests, stops the staging of
// and removes the files of every lease not in running. It returns how many stagings
// it started and how many leases it removed. It never blocks (see started, finished).
func (p *dataPath) resync(ctx context.Context, running []*hostv1.TaskEvent, guests []vmpool.GuestRef) (staged, removed int) {
	keep := map[leaseKey]bool{}
	for _, e := range running {
		keep[leaseKey{e.GetGuest(), e.GetTaskId(), e.GetLeaseId()}] = true
	}
	p.mu.Lock()
	var stale []leaseKey
	inFlight := map[leaseKey]bool{}
	for k := range p.stagings {
		inFlight[k] = true
		if !keep[k] {
			stale = append(stale, k)
		}
	}
	p.mu.Unlock()
	for _, e := range running {
		k := leaseKey{e.GetGuest(), e.GetTaskId(), e.GetLeaseId()}
		if len(e.GetInputs()) == 0 || inFlight[k] || p.markerPresent(k) {
			continue
		}
		if _, ok := p.guests(k.guest); !ok {
			continue // not a guest of this run (e.g. one a previous run left, reported gone)
		}
		p.started(ctx, e)
		staged++
	}
	for _, g := range guests {
		for _, k := range leasesOnDisk(g) {
			if !keep[k] && !inFlight[k] {
				stale = append(stale, k)
			}
		}
	}
	for _, k := range stale {
		p.finished(&hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_FINISHED, Guest: k.guest, TaskId: k.task, LeaseId: k.lease})
	}
	return staged, len(stale)
}

// markerPresent reports whether lease k's staging marker is in its guest's input share.
func (p *dataPath) markerPresent(k leaseKey) bool {
	g, ok := p.guests(k.guest)
	if !ok || g.InDir == "" {
		return false
	}
	name, err := leaseDirName(k.task, k.lease)
	if err != nil {
		return false
	}
	_, err = os.Lstat(filepath.Join(g.InDir, name, guestabi.MarkerName))
	return err == nil
}

// leasesOnDisk returns the leases whose directories (guestabi.LeaseDir, "<task>.<lease>")
// are in g's shares.
func leasesOnDisk(g vmpool.GuestRef) []leaseKey {
	seen := map[leaseKey]bool{}
	var out []leaseKey
	for _, share := range []string{g.InDir, g.OutDir} {
		if share == "" {
			continue
		}
		ents, err := os.ReadDir(share)
		if err != nil {
			continue
		}
		for _, e := range ents {
			i := strings.LastIndexByte(e.Name(), '.')
			if i <= 0 {
				continue
			}
			lease, err := strconv.ParseUint(e.Name()[i+1:], 10, 64)
			if err != nil {
				continue
			}
			k := leaseKey{g.Name, e.Name()[:i], lease}
			if guestabi.LeaseDir(k.task, k.lease) == e.Name() && !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}
