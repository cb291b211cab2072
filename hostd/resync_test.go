package hostd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/vmpool"
)

// TestResyncDataPath: applying a snapshot stages the inputs of a lease the host never
// heard of (its KIND_STARTED was lost), leaves a lease already staged alone, and
// removes the files of a lease the snapshot no longer holds (its KIND_FINISHED was
// lost) from both shares.
func TestResyncDataPath(t *testing.T) {
	e := newDPEnv(t)
	in := []byte("input of the staged lease")
	d := e.srv.add(in)
	inputs := map[string]*hostv1.BlobRef{"in": ref(d, len(in))}
	if st, m := e.stage("task-a", 1, inputs); st.GetError() != "" || !m.OK {
		t.Fatalf("staging task-a: %v %+v", st, m)
	}
	stale := guestabi.LeaseDir("task-b", 4)
	for _, share := range []string{e.g.InDir, e.g.OutDir} {
		if err := os.MkdirAll(filepath.Join(share, stale), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(share, stale, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	running := []*hostv1.TaskEvent{
		{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "task-a", LeaseId: 1, Inputs: inputs},
		{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "task-c", LeaseId: 2, Inputs: inputs},
		{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "task-d", LeaseId: 1}, // no inputs: nothing to stage
		// A guest this daemon does not know (a previous run's, being reported gone).
		{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: "paddock-p-0ldrun00", TaskId: "task-e", LeaseId: 1, Inputs: inputs},
	}
	staged, removed := e.dp.resync(context.Background(), running, nil)
	if staged != 1 {
		t.Errorf("resync started %d stagings, want 1 (task-c only: task-e's guest is unknown)", staged)
	}
	st := e.next().GetStaged()
	if st.GetTaskId() != "task-c" || st.GetLeaseId() != 2 || st.GetError() != "" {
		t.Fatalf("sent %v, want task-c's Staged", st)
	}
	if _, err := os.Stat(filepath.Join(e.g.InDir, guestabi.LeaseDir("task-c", 2), guestabi.MarkerName)); err != nil {
		t.Errorf("task-c's marker: %v", err)
	}
	if removed != 0 {
		t.Errorf("resync without guests removed %d leases, want 0 (it only looks into the guests it is given)", removed)
	}

	if _, removed = e.dp.resync(context.Background(), running, nil); removed != 0 {
		t.Fatal(removed)
	}
	staged, removed = e.dp.resync(context.Background(), running, []vmpool.GuestRef{e.g})
	if staged != 0 || removed != 1 {
		t.Errorf("second resync: staged %d removed %d, want 0 and 1 (task-b)", staged, removed)
	}
	e.dp.wait()
	for _, share := range []string{e.g.InDir, e.g.OutDir} {
		if _, err := os.Stat(filepath.Join(share, stale)); !os.IsNotExist(err) {
			t.Errorf("stale lease directory in %s: %v", share, err)
		}
	}
	for _, lease := range []string{guestabi.LeaseDir("task-a", 1), guestabi.LeaseDir("task-c", 2)} {
		if _, err := os.Stat(filepath.Join(e.g.InDir, lease, guestabi.MarkerName)); err != nil {
			t.Errorf("lease %s of the snapshot lost its staging: %v", lease, err)
		}
	}
}
