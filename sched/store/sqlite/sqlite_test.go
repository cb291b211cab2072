package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenKeepsTasks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "paddock.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, storetest.NewTask("a", "echo")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if tk, err := s.Get(ctx, "a"); err != nil || tk.State != store.Queued {
		t.Fatalf("after reopen: %+v, %v", tk, err)
	}
}

func TestBadOptions(t *testing.T) {
	_, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{Synchronous: "OFF"})
	if err == nil {
		t.Fatal("Synchronous OFF accepted")
	}
}

// TestPrivateFiles: the database directory is created 0700 and the database, WAL and
// shared-memory files are 0600 even under umask 0; existing files are tightened.
func TestPrivateFiles(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "paddock.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, storetest.NewTask("a", "echo")); err != nil {
		t.Fatal(err)
	}
	check := func(p string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(p), got, want)
		}
	}
	check(dir, 0o700)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		check(p, 0o600)
	}
	s.Close()
	// A database created world-readable before is made private on open.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Chmod(p, 0o644)
	}
	s, err = sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(p); err == nil {
			check(p, 0o600)
		}
	}
}

// BenchmarkSynchronous measures durable throughput, submit+lease+complete of one task
// per op by 16 concurrent callers (group commit), with synchronous=FULL (the default)
// and NORMAL in the same run, and reports both rates and their ratio:
//
//	CGO_ENABLED=0 go test -run '^$' -bench Synchronous -benchtime 2000x ./sched/store/sqlite
func BenchmarkSynchronous(b *testing.B) {
	ctx := context.Background()
	rate := map[string]float64{}
	for _, mode := range []string{"FULL", "NORMAL"} {
		s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{Synchronous: mode})
		if err != nil {
			b.Fatal(err)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					id := fmt.Sprintf("t%d", i)
					if _, _, err := s.Create(ctx, storetest.NewTask(id, "echo")); err != nil {
						b.Error(err)
						return
					}
					ls, err := s.Lease(ctx, time.Now(), []store.Grant{{TaskID: id, AgentID: "a", ExpiresAt: time.Now().Add(time.Minute)}})
					if err != nil || len(ls) != 1 {
						b.Error(err)
						return
					}
					out := []byte("ok")
					if _, err := s.Update(ctx, store.Update{TaskID: id, From: []store.State{store.Leased}, LeaseID: ls[0].LeaseID,
						To: store.Succeeded, Now: time.Now(), Output: &out, EndAttempt: true}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		rate[mode] = float64(b.N) / time.Since(start).Seconds()
		s.Close()
	}
	b.ReportMetric(rate["FULL"], "full_tasks/s")
	b.ReportMetric(rate["NORMAL"], "normal_tasks/s")
	b.ReportMetric(rate["NORMAL"]/rate["FULL"], "normal/full")
	b.ReportMetric(0, "ns/op")
}

// TestCreateReturnsStoredTask: Create builds the task it returns instead of reading the
// row back; it must be the task Get reads.
func TestCreateReturnsStoredTask(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Now()
	full := storetest.NewTask("full", "echo")
	full.Payload, full.Priority, full.Class, full.Timeout = []byte("p"), 7, store.Online, 1500*time.Microsecond+time.Second
	full.Inputs = map[string][]byte{"a": []byte("x"), "e": {}}
	full.InputBlobs = map[string]store.BlobRef{"b": {Digest: "sha256:" + strings.Repeat("ab", 32), Size: 3}}
	full.Requirements = store.Requirements{CPUMillis: 500, MemoryBytes: 1 << 20, Labels: map[string]string{"gpu": "no"}}
	full.IdempotencyKey, full.ScheduleDeadline, full.NotBefore, full.CreatedAt = "k1", t0.Add(time.Minute+time.Microsecond), t0.Add(time.Second), t0
	empty := storetest.NewTask("empty", "echo")
	empty.Payload, empty.Inputs, empty.Requirements.Labels = []byte{}, map[string][]byte{}, map[string]string{}
	waiting := storetest.NewTask("waiting", "echo")
	waiting.Upstreams = map[string]store.Upstream{"in": {TaskID: "full", Output: "o"}}
	for _, tk := range []store.Task{full, empty, waiting, storetest.NewTask("plain", "echo")} {
		got, created, err := s.Create(ctx, tk)
		if err != nil || !created {
			t.Fatalf("Create(%s) = %v, %v", tk.ID, created, err)
		}
		want, err := s.Get(ctx, tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Create(%s) returned\n%+v\nGet reads\n%+v", tk.ID, got, want)
		}
	}
}
