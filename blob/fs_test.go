package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobtest"
	"github.com/paddockvm/paddock/internal/testutil"
)

func openFS(t *testing.T) blob.Store {
	s, err := blob.OpenFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFSContract(t *testing.T) { blobtest.Contract(t, openFS) }

func TestParseDigest(t *testing.T) {
	good := string(blob.FromBytes([]byte("x")))
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{"good", good, false},
		{"empty", "", true},
		{"no prefix", good[7:], true},
		{"upper hex", "sha256:" + strings.ToUpper(good[7:]), true},
		{"short", good[:70], true},
		{"long", good + "0", true},
		{"other algorithm", "sha512:" + good[7:], true},
		{"not hex", good[:70] + "g", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := blob.ParseDigest(tt.in)
			if tt.wantErr {
				if !errors.Is(err, blob.ErrInvalid) || !strings.Contains(err.Error(), `"sha256:" followed by 64 lowercase hex digits`) {
					t.Fatalf("ParseDigest(%q) = %v; want ErrInvalid naming the form", tt.in, err)
				}
				return
			}
			if err != nil || string(d) != tt.in || d.Hex() != tt.in[7:] {
				t.Fatalf("ParseDigest(%q) = %q, %v (hex %q)", tt.in, d, err, d.Hex())
			}
		})
	}
	// The digest of the empty string, as sha256sum prints it.
	if got := blob.FromBytes(nil); got != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("FromBytes(nil) = %s", got)
	}
}

func TestFSLayoutAndMismatchMessage(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.OpenFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.String() != "fs:"+dir {
		t.Errorf("String() = %q", s.String())
	}
	data := []byte("hello, paddock")
	d := blob.FromBytes(data)
	if _, err := s.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sha256", d.Hex()[:2], d.Hex())
	if s.Path(d) != p {
		t.Errorf("Path = %s, want %s", s.Path(d), p)
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("file %s: %q, %v", p, b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("blob file mode %v, want 0600", fi.Mode().Perm())
	}
	wrong := blob.FromBytes([]byte("other"))
	_, err = s.Put(context.Background(), wrong, int64(len(data)), bytes.NewReader(data))
	if !errors.Is(err, blob.ErrMismatch) || !strings.Contains(err.Error(), string(d)) || !strings.Contains(err.Error(), string(wrong)) {
		t.Fatalf("mismatch error %v: want ErrMismatch naming expected %s and got %s", err, wrong, d)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d files after a mismatch; want none", len(ents))
	}
}

func TestFSOpenRemovesStaleUploads(t *testing.T) {
	dir := t.TempDir()
	if _, err := blob.OpenFS(dir); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "tmp", "0123456789abcdef.12345")
	if err := os.WriteFile(stale, []byte("half an upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := blob.OpenFS(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale upload still there after OpenFS: %v", err)
	}
}

// mountTmpfs mounts a real tmpfs of size (mount's syntax, e.g. 1m) on a temp directory
// for the test, and skips (saying how to enable it) where the test cannot mount.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Skip(t, "mounting a tmpfs needs root", "run the tests as root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "paddock-blobtest", dir).CombinedOutput(); err != nil {
		testutil.Skip(t, "cannot mount a tmpfs: "+string(out), "run the tests as root on a machine that allows mount")
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestFSDiskFull fills a real 1 MiB tmpfs: the error says the disk is full and what to
// do, wraps ErrUnavailable, and nothing partial is left.
func TestFSDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "1m")
	s, err := blob.OpenFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := blobtest.Data(1, 3<<20)
	d := blob.FromBytes(data)
	// Size known: the space is reserved first, so the Put fails before reading a byte.
	cr := &blobtest.CountingReader{R: bytes.NewReader(data)}
	_, err = s.Put(context.Background(), d, int64(len(data)), cr)
	if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "the disk of "+dir+" is full") {
		t.Fatalf("Put of a known size on a full disk: %v; want ErrUnavailable saying the disk of %s is full", err, dir)
	}
	if cr.N() != 0 {
		t.Errorf("Put read %d bytes before finding the disk full; want 0 (free space checked first)", cr.N())
	}
	// Size unknown: fails on write.
	_, err = s.Put(context.Background(), d, -1, bytes.NewReader(data))
	if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "the disk of "+dir+" is full") || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("Put on a full disk: %v; want ErrUnavailable saying the disk of %s is full and what to do", err, dir)
	}
	t.Log(err)
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d files after ENOSPC; want none", len(ents))
	}
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after ENOSPC: %v, want ErrNotFound", err)
	}
	small := []byte("fits")
	if _, err := s.Put(context.Background(), blob.FromBytes(small), 4, bytes.NewReader(small)); err != nil {
		t.Errorf("a small Put after the failed one: %v (space was not freed)", err)
	}
}

// TestFSReserve: on a real 200 MiB tmpfs with 100 MiB reserved, a Put that would eat into
// the reserve fails before reading when its size is known, and while writing when it is
// not; nothing partial is left, the error names server.blob_reserve, and a Put that
// leaves the reserve alone succeeds.
func TestFSReserve(t *testing.T) {
	dir := mountTmpfs(t, "200m")
	s, err := blob.OpenFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.SetReserve(100 << 20)
	ctx := context.Background()
	want := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "server.blob_reserve") {
			t.Fatalf("%s: %v; want ErrUnavailable naming server.blob_reserve", what, err)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
			t.Errorf("%s: tmp holds %d files; want none", what, len(ents))
		}
	}
	big := blobtest.Data(1, 150<<20)
	d := blob.FromBytes(big)
	cr := &blobtest.CountingReader{R: bytes.NewReader(big)}
	_, err = s.Put(ctx, d, int64(len(big)), cr)
	want(err, "Put of 150 MiB, size known")
	if cr.N() != 0 {
		t.Errorf("Put read %d bytes before refusing; want 0 (free space checked first)", cr.N())
	}
	cr = &blobtest.CountingReader{R: bytes.NewReader(big)}
	_, err = s.Put(ctx, d, -1, cr)
	want(err, "Put of 150 MiB, size unknown")
	if cr.N() < 64<<20 {
		t.Errorf("Put of unknown size read %d bytes before refusing; want it refused while writing", cr.N())
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after the refusals: %v, want ErrNotFound", err)
	}
	fits := blobtest.Data(2, 80<<20)
	if _, err := s.Put(ctx, blob.FromBytes(fits), -1, bytes.NewReader(fits)); err != nil {
		t.Errorf("a Put of 80 MiB, leaving the reserve alone: %v", err)
	}
}

// TestFSPutLargeStreamMemory puts 512 MiB from a generated stream and checks the heap
// stays small (the blob is never held in memory).
func TestFSPutLargeStreamMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 512 MiB; skipped with -short")
	}
	const n = 512 << 20
	d := blobtest.StreamDigest(t, 7, n)
	s := openFS(t)
	stop := blobtest.WatchHeap()
	info, err := s.Put(context.Background(), d, n, blobtest.NewStream(7, n))
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != n {
		t.Fatalf("size %d", info.Size)
	}
	t.Logf("Put of %d MiB: peak HeapInuse growth %.1f MiB", n>>20, float64(peak)/(1<<20))
	if peak > 16<<20 {
		t.Errorf("heap grew by %d bytes during a streaming Put; want under 16 MiB", peak)
	}
	// Reading it back streams too.
	rc, err := s.Open(context.Background(), d, n-10)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if len(b) != 10 {
		t.Fatalf("tail read %d bytes", len(b))
	}
}
