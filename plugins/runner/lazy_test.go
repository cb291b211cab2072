package runner_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/paddockvm/paddock/plugins/runner"
)

// declaredTypes asks the real testhandler which types it serves (as an image build
// records them in the manifest).
func declaredTypes(t *testing.T) []runner.TaskType {
	t.Helper()
	return newRunner(t, nil).Types()
}

func lazySpec(t *testing.T, types []runner.TaskType) func(*runner.Config) {
	return func(c *runner.Config) {
		c.Lazy = true
		c.Handlers[0].Types = types
	}
}

// A lazy handler with declared types is not started by New; New still returns its
// types; the first calls (concurrent) start exactly one process, which then serves.
func TestLazyStartOnFirstCall(t *testing.T) {
	types := declaredTypes(t)
	r := newRunner(t, lazySpec(t, types))
	if st := r.Status()[0]; st.Up || st.Started || st.PID != 0 {
		t.Fatalf("after New: %+v, want a handler not started", st)
	}
	if got := r.Types(); len(got) != len(types) || got[0].Name != types[0].Name || got[0].Handler != "testhandler" {
		t.Fatalf("Types() = %+v, want the declared %+v", got, types)
	}
	var wg sync.WaitGroup
	results := make([]runner.Result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.Execute(context.Background(), runner.Task{ID: "t", Type: "test.echo", Payload: []byte("hi")})
		}()
	}
	wg.Wait()
	for i, res := range results {
		if !res.OK() || string(res.Output) != "hi" {
			t.Fatalf("call %d: %+v", i, res)
		}
	}
	st := r.Status()[0]
	if !st.Up || !st.Started || st.PID == 0 || st.Restarts != 0 {
		t.Fatalf("after the first calls: %+v, want one process up", st)
	}
	// Supervised as an eagerly started handler is: a crash restarts it.
	if res := r.Execute(context.Background(), runner.Task{Type: "test.crash"}); res.Reason != runner.ReasonCrashed {
		t.Fatalf("crash: %+v", res)
	}
	waitNewPID(t, r, st.PID)
}

// A lazily started handler that serves other types than its image recorded is
// refused (the agent registered the recorded ones), and each call says why.
func TestLazyStartRefusesOtherTypes(t *testing.T) {
	types := declaredTypes(t)
	types[0].Version = "0.0.0-recorded"
	r := newRunner(t, lazySpec(t, types))
	res := r.Execute(context.Background(), runner.Task{Type: types[0].Name})
	if res.OK() || res.Reason != runner.ReasonUnavailable || !strings.Contains(res.Error, "image recorded") || !strings.Contains(res.Error, "0.0.0-recorded") {
		t.Fatalf("call: %+v, want handler_unavailable naming the recorded types", res)
	}
	if st := r.Status()[0]; st.Up || st.Started {
		t.Fatalf("refused handler: %+v", st)
	}
}

// A tampered binary of a lazy handler is refused at its first call, with the same
// checksum error New gives for an eager one.
func TestLazyTamperedBinaryIsRefused(t *testing.T) {
	types := declaredTypes(t)
	b, err := os.ReadFile(bins["testhandler"].Path)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/tampered"
	if err := os.WriteFile(path, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, func(c *runner.Config) {
		c.Lazy = true
		c.Handlers = []runner.HandlerSpec{{Name: "evil", Path: path, SHA256: bins["testhandler"].SHA256, Types: types}}
	})
	res := r.Execute(context.Background(), runner.Task{Type: "test.echo"})
	if res.OK() || !strings.Contains(res.Error, runner.ErrChecksum.Error()) || !strings.Contains(res.Error, `"evil"`) {
		t.Fatalf("call: %+v, want the checksum error naming handler \"evil\"", res)
	}
}

// Without declared types a lazy runner must ask the handler: it starts in New.
func TestLazyWithoutTypesStartsInNew(t *testing.T) {
	r := newRunner(t, func(c *runner.Config) { c.Lazy = true })
	if st := r.Status()[0]; !st.Up || !st.Started {
		t.Fatalf("after New: %+v, want started", st)
	}
}

// Handlers start in parallel in New; one failing fails New and stops the others.
func TestEagerStartFailureStopsTheOthers(t *testing.T) {
	bad := spec("testfiles")
	bad.Name, bad.SHA256 = "bad", strings.Repeat("00", 32)
	_, err := runner.New(context.Background(), runner.Config{Handlers: []runner.HandlerSpec{spec("testhandler"), bad}, Logger: testLogger(t)})
	if !errors.Is(err, runner.ErrChecksum) || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("New: %v, want ErrChecksum for handler \"bad\"", err)
	}
}

// StartAll brings every lazy handler up without a call (handler_start: eager).
func TestStartAll(t *testing.T) {
	r := newRunner(t, lazySpec(t, declaredTypes(t)))
	r.StartAll(context.Background())
	if st := r.Status()[0]; !st.Up || !st.Started || st.PID == 0 {
		t.Fatalf("after StartAll: %+v, want the handler up", st)
	}
	if res := r.Execute(context.Background(), runner.Task{Type: "test.echo", Payload: []byte("x")}); !res.OK() {
		t.Fatalf("call: %+v", res)
	}
}

// A lazy handler that the image holds gzip-compressed (HandlerSpec.Packed, the real
// testhandler compressed) is unpacked to its path on its first call, checked and run;
// the compressed copy is removed. A packed copy whose contents are not the pinned
// binary is refused like a tampered binary.
func TestLazyStartUnpacksPackedHandler(t *testing.T) {
	types := declaredTypes(t)
	bin, err := os.ReadFile(spec("testhandler").Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content []byte
		wantOK  bool
	}{
		{"the pinned binary", bin, true},
		{"another binary", append(append([]byte{}, bin...), 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			packed, path := filepath.Join(dir, "testhandler.gz"), filepath.Join(dir, "testhandler")
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(tc.content)
			zw.Close()
			if err := os.WriteFile(packed, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, func(c *runner.Config) {
				lazySpec(t, types)(c)
				c.Handlers[0].Path, c.Handlers[0].Packed = path, packed
			})
			if _, err := os.Stat(path); err == nil {
				t.Fatal("New unpacked the lazy handler before its first call")
			}
			res := r.Execute(context.Background(), runner.Task{ID: "t", Type: "test.echo", Payload: []byte("hi")})
			if tc.wantOK {
				if !res.OK() || string(res.Output) != "hi" {
					t.Fatalf("first call: %+v", res)
				}
				if _, err := os.Stat(packed); err == nil {
					t.Error("the packed copy is still there after unpacking")
				}
				return
			}
			if res.OK() || res.Reason != runner.ReasonUnavailable {
				t.Fatalf("first call of a packed binary other than the pinned one: %+v, want handler_unavailable", res)
			}
		})
	}
}
