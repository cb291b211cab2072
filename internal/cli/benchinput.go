package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/sched"
)

// runInputBench is paddock bench --input-size: per round, a raw blob upload+download
// through the HTTP API, then a checksum task with a fresh blob input of the same size,
// both against one server in this process.
func runInputBench(ctx context.Context, app *App, o benchOpts) error {
	size, _ := parseSize(o.inputSize) // checked by resolve
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := o.dataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "paddock-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	store, err := blob.OpenFS(filepath.Join(dir, "blobs"))
	if err != nil {
		return err
	}
	ls, err := startLocalServer(ctx, dir, sched.Config{Dev: true, Blobs: store, Logger: quiet})
	if err != nil {
		return err
	}
	defer ls.Stop()
	agents, err := startBenchAgents(ls.ctx, o, ls.AgentAddr, dir)
	if err != nil {
		return err
	}
	defer stopBenchAgents(agents)
	if err := waitBenchAgents(app, ls.Server, o.agents, dir); err != nil {
		return err
	}
	c := &blobhttp.Client{BaseURL: ls.URL, HTTP: &http.Client{}}
	tc := paddockv1connect.NewTaskServiceClient(http.DefaultClient, ls.URL)

	var raw, task []float64 // bytes/s per round
	var taskTimes []time.Duration
	file := filepath.Join(dir, "input.bin")
	hs := humanize.IBytes(uint64(size))
	for i := 0; i < o.tasks; i++ {
		// Raw: the same bytes through the same two hops (client → server → reader),
		// with no task around them.
		d, err := writeBenchFile(ctx, file, size, uint64(2*i))
		if err != nil {
			return err
		}
		start := time.Now()
		if _, _, err := c.PutFile(ctx, file, nil); err != nil {
			return fmt.Errorf("bench: raw upload: %w", err)
		}
		if _, err := c.Get(ctx, d, io.Discard, 0, nil); err != nil {
			return fmt.Errorf("bench: raw download: %w", err)
		}
		raw = append(raw, float64(size)/time.Since(start).Seconds())
		if err := c.Delete(ctx, d); err != nil {
			return fmt.Errorf("bench: removing the raw blob: %w", err)
		}

		// Task: upload as paddock task submit --input does, then until it succeeded.
		if d, err = writeBenchFile(ctx, file, size, uint64(2*i+1)); err != nil {
			return err
		}
		start = time.Now()
		spec := &paddockv1.TaskSpec{Type: "checksum", Payload: []byte(`{"algorithms":["sha256"]}`)}
		if err := addInputs(ctx, app, c, spec, []string{"in=" + file}, nil, false, "0", true); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		r, err := tc.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
		if err != nil {
			return fmt.Errorf("bench: submitting: %w", err)
		}
		id := r.Msg.GetTask().GetId()
		if err := waitTerminal(ctx, ls.Server.Store(), []string{id}); err != nil {
			return err
		}
		el := time.Since(start)
		t, err := ls.Server.Store().Get(ctx, id)
		if err != nil {
			return fmt.Errorf("bench: reading task %s: %w", id, err)
		}
		var out struct {
			Inputs map[string]struct{ SHA256 string } `json:"inputs"`
		}
		if err := json.Unmarshal(t.Output, &out); err != nil || out.Inputs["in"].SHA256 != d.Hex() {
			return fmt.Errorf("bench: task %s output %q does not give the input's sha256 %s: the handler did not read the whole input", id, clip(string(t.Output), 200), d.Hex())
		}
		task = append(task, float64(size)/el.Seconds())
		taskTimes = append(taskTimes, el)
		fmt.Fprintf(app.Err, "bench: round %d/%d (%s): raw %s/s, task %s/s\n", i+1, o.tasks, hs,
			humanize.IBytes(uint64(raw[i])), humanize.IBytes(uint64(task[i])))
	}
	os.Remove(file)
	rawMed, taskMed := median(raw), median(task)
	res := []benchResult{
		{"raw blob put+get bytes/s", humanize.IBytes(uint64(rawMed)) + "/s", fmt.Sprintf("%s blob, upload then download through the blob HTTP API; median of %d", hs, len(raw))},
		{"task input bytes/s", humanize.IBytes(uint64(taskMed)) + "/s", fmt.Sprintf("checksum task, %s blob input, submit (upload) → succeeded; %.1f%% of raw", hs, 100*taskMed/rawMed)},
		{"task time", pct(taskTimes, 0.5).Round(time.Millisecond).String(), fmt.Sprintf("median; %d agent(s) over TCP (the agent fetches the input over its server connection)", o.agents)},
	}
	return printBenchResults(app, res)
}

// writeBenchFile writes size pseudo-random bytes (seeded, so each round's differ) to
// path and returns their digest.
func writeBenchFile(ctx context.Context, path string, size int64, seed uint64) (blob.Digest, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	h := blob.NewHasher()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 'p', 'a', 'd'})
	if _, err := blob.CopyContext(ctx, w, io.LimitReader(src, size)); err != nil {
		return "", fmt.Errorf("bench: writing %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		return "", fmt.Errorf("bench: writing %s: %w", path, err)
	}
	return h.Digest(), f.Close()
}

// median returns the median of xs (sorted in place).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	return xs[len(xs)/2]
}
