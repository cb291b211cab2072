package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// DataPlaneSize is the size of the generated input of the data-plane part: larger than
// the server's inline limit (4 MiB), so it can only travel as a blob.
const DataPlaneSize = 64 << 20

// dataPlane is the scenario's second part: a generated 64 MiB log goes to the server
// once as a blob (`task submit --input` uploads it; the second submit skips the upload),
// is checksummed in a guest (the digest checked against sha256sum), compressed in a
// guest, and the compressed output decompressed in a guest; the result is downloaded
// with `task output` and must be the same bytes.
func (r *runner) dataPlane(ctx context.Context) error {
	r.printf("\n-- data plane: a %d MiB input, far over the inline limit, as a blob --\n", DataPlaneSize>>20)
	dir, err := os.MkdirTemp("", "paddock-demo-data-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	big := filepath.Join(dir, "big.log")
	if err := writeLog(big, DataPlaneSize); err != nil {
		return fmt.Errorf("demo: writing %s: %w", big, err)
	}
	want, err := sha256sum(ctx, big)
	if err != nil {
		return err
	}
	r.printf("$ sha256sum big.log   # a generated %d MiB service log\n  %s\n", DataPlaneSize>>20, want)

	sum, err := r.submitWait(ctx, "checksum of a 64 MiB blob input", "--type", "checksum", "--input", "big.log="+big)
	if err != nil {
		return err
	}
	var cs struct {
		Inputs map[string]struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(sum.GetOutput(), &cs); err != nil {
		return fmt.Errorf("demo: decoding the checksum output %q: %w", sum.GetOutput(), err)
	}
	got := cs.Inputs["big.log"]
	if got.SHA256 != want || got.Size != DataPlaneSize {
		return fmt.Errorf("demo: the handler's sha256 of big.log is %s (%d bytes); sha256sum says %s (%d bytes)", got.SHA256, got.Size, want, DataPlaneSize)
	}
	r.printf("  data plane: checksum big.log size=%d sha256=%s (sha256sum agrees)\n", got.Size, got.SHA256)

	comp, err := r.submitWait(ctx, "zstd of the same input (its upload is skipped: the server has it)", "--type", "compress.zstd", "--input", "big.log="+big)
	if err != nil {
		return err
	}
	zst, ok := comp.GetOutputBlobs()["big.log.zst"]
	if !ok {
		return fmt.Errorf("demo: task %s has no output blob big.log.zst (outputs: %v)", comp.GetId(), comp.GetOutputBlobs())
	}
	r.printf("  data plane: compress.zstd big.log → big.log.zst %s, %d bytes (%.1f%% of the input)\n", zst.GetDigest(), zst.GetSize(), 100*float64(zst.GetSize())/DataPlaneSize)

	dec, err := r.submitWait(ctx, "decompression of the compressed output, a blob named by digest", "--type", "decompress.zstd", "--input-blob", "big.log.zst="+zst.GetDigest())
	if err != nil {
		return err
	}
	back, ok := dec.GetOutputBlobs()["big.log"]
	if !ok {
		return fmt.Errorf("demo: task %s has no output blob big.log (outputs: %v)", dec.GetId(), dec.GetOutputBlobs())
	}
	out := filepath.Join(dir, "back.log")
	r.printf("$ paddock task output %s big.log -o back.log\n", dec.GetId())
	if _, err := r.cli(ctx, false, "task", "output", dec.GetId(), "big.log", "-o", out, "-q"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	again, err := sha256sum(ctx, out)
	if err != nil {
		return err
	}
	if back.GetDigest() != "sha256:"+want || again != want {
		return fmt.Errorf("demo: decompress(compress(big.log)) is %s, downloaded sha256 %s; big.log is %s", back.GetDigest(), again, want)
	}
	r.printf("  data plane: decompress.zstd gave back big.log byte for byte (sha256sum back.log = %s)\n", again)
	return nil
}

// submitWait submits a task, waits for it and returns it; anything but success is an
// error.
func (r *runner) submitWait(ctx context.Context, label string, args ...string) (*paddockv1.Task, error) {
	full := append([]string{"task", "submit", "--wait", "--json", "-q"}, args...)
	r.printf("$ paddock %s   # %s\n", strings.Join(full[:2], " ")+" "+strings.Join(args, " "), label)
	start := time.Now()
	out, err := r.cli(ctx, true, full...)
	if err != nil {
		return nil, fmt.Errorf("demo: submitting the %s: %w", label, err)
	}
	var t paddockv1.Task
	if err := unmarshal.Unmarshal(out, &t); err != nil {
		return nil, fmt.Errorf("demo: decoding the task of the %s: %w", label, err)
	}
	if t.GetState() != paddockv1.State_STATE_SUCCEEDED {
		return nil, fmt.Errorf("demo: the %s (task %s) ended %s: %s", label, t.GetId(), stateName(t.GetState()), t.GetError())
	}
	r.printf("  → task %s succeeded in %s\n", t.GetId(), time.Since(start).Round(100*time.Millisecond))
	return &t, nil
}

// writeLog writes size bytes of a plausible, compressible service log.
func writeLog(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	levels := []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	var n int64
	for i := 0; n < size; i++ {
		l := "2026-12-01T12:" + pad2(i/60%60) + ":" + pad2(i%60) + "Z " + levels[i%len(levels)] +
			" request id=" + strconv.Itoa(i*7919%100003) + " path=/api/v1/items/" + strconv.Itoa(i%977) + " status=200 ms=" + strconv.Itoa(i%313) + "\n"
		if int64(len(l)) > size-n {
			l = l[:size-n]
		}
		w.WriteString(l)
		n += int64(len(l))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pad2(i int) string {
	if i < 10 {
		return "0" + strconv.Itoa(i)
	}
	return strconv.Itoa(i)
}

// sha256sum runs the sha256sum tool (independent of Go) on path.
func sha256sum(ctx context.Context, path string) (string, error) {
	out, err := exec.CommandContext(ctx, "sha256sum", path).Output()
	if err != nil {
		return "", fmt.Errorf("demo: sha256sum %s: %w", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "", fmt.Errorf("demo: sha256sum %s printed nothing", path)
	}
	return f[0], nil
}
