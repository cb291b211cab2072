package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// Data returns n deterministic pseudo-random bytes for seed.
func Data(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Stream is a deterministic io.Reader of n bytes that never holds more than a small
// buffer: for large-blob tests and benchmarks.
type Stream struct {
	n, off int64
	buf    []byte
}

// NewStream returns a Stream of n bytes for seed (a block of 65521 bytes, a prime, repeated).
func NewStream(seed uint64, n int64) *Stream { return &Stream{n: n, buf: Data(seed, 65521)} }

func (s *Stream) Read(p []byte) (int, error) {
	if s.off >= s.n {
		return 0, io.EOF
	}
	if int64(len(p)) > s.n-s.off {
		p = p[:s.n-s.off]
	}
	done := 0
	for done < len(p) {
		i := int((s.off + int64(done)) % int64(len(s.buf)))
		done += copy(p[done:], s.buf[i:])
	}
	s.off += int64(len(p))
	return len(p), nil
}

// StreamDigest returns the digest of NewStream(seed, n) (reading it once).
func StreamDigest(t testing.TB, seed uint64, n int64) blob.Digest {
	t.Helper()
	d, _, err := blob.DigestReader(context.Background(), NewStream(seed, n))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// WatchHeap samples runtime.MemStats.HeapInuse every 20ms until the returned stop is
// called, and stop returns the largest growth over the figure at the start (after a GC):
// for tests that a transfer streams instead of holding the data.
func WatchHeap() (stop func() (peak uint64)) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// CutReader yields the first Cut bytes of Data, then fails with Err: a cut-off upload.
type CutReader struct {
	Data []byte
	Cut  int
	Err  error
	off  int
}

// ErrCut is CutReader's default error.
var ErrCut = errors.New("blobtest: connection cut")

func (c *CutReader) Read(p []byte) (int, error) {
	if c.off >= c.Cut {
		if c.Err == nil {
			return 0, ErrCut
		}
		return 0, c.Err
	}
	n := copy(p, c.Data[c.off:c.Cut])
	c.off += n
	return n, nil
}

// CountingReader counts the bytes read through it (safe to ask from another goroutine):
// tests use it to show that a call read nothing.
type CountingReader struct {
	R io.Reader
	n atomic.Int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// N returns the bytes read so far.
func (c *CountingReader) N() int64 { return c.n.Load() }

// Contract runs the suite every blob.Store passes. open returns an empty store; it is
// called once per subtest.
func Contract(t *testing.T, open func(t *testing.T) blob.Store) {
	ctx := context.Background()
	put := func(t *testing.T, s blob.Store, data []byte) blob.Info {
		t.Helper()
		d := blob.FromBytes(data)
		info, err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Put %s: %v", d, err)
		}
		if info.Digest != d || info.Size != int64(len(data)) {
			t.Fatalf("Put returned %+v, want digest %s size %d", info, d, len(data))
		}
		return info
	}
	read := func(t *testing.T, s blob.Store, d blob.Digest, off int64) []byte {
		t.Helper()
		rc, err := s.Open(ctx, d, off)
		if err != nil {
			t.Fatalf("Open %s at %d: %v", d, off, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("reading %s at %d: %v", d, off, err)
		}
		return b
	}
	absent := func(t *testing.T, s blob.Store, d blob.Digest) {
		t.Helper()
		if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Stat %s: got %v, want ErrNotFound (something was stored)", d, err)
		}
		l, err := s.List(ctx, "", 0)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, i := range l {
			if i.Digest == d {
				t.Fatalf("List shows %s, which must not be stored", d)
			}
		}
	}

	t.Run("PutStatOpen", func(t *testing.T) {
		s := open(t)
		if s.String() == "" {
			t.Error("String() is empty")
		}
		data := Data(1, 300<<10+7)
		before := time.Now().Add(-2 * time.Second)
		info := put(t, s, data)
		got, err := s.Stat(ctx, info.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != info.Digest || got.Size != int64(len(data)) {
			t.Fatalf("Stat = %+v, want size %d", got, len(data))
		}
		if got.ModTime.Before(before) || got.ModTime.After(time.Now().Add(2*time.Second)) {
			t.Errorf("ModTime %v is not about now", got.ModTime)
		}
		for _, off := range []int64{0, 1, 4096, int64(len(data)) - 1, int64(len(data))} {
			if b := read(t, s, info.Digest, off); !bytes.Equal(b, data[off:]) {
				t.Fatalf("Open at %d: got %d bytes, want the %d from there", off, len(b), len(data)-int(off))
			}
		}
		for _, off := range []int64{-1, int64(len(data)) + 1} {
			if _, err := s.Open(ctx, info.Digest, off); !errors.Is(err, blob.ErrInvalid) {
				t.Errorf("Open at %d: got %v, want ErrInvalid", off, err)
			}
		}
	})

	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		info := put(t, s, nil)
		if b := read(t, s, info.Digest, 0); len(b) != 0 {
			t.Fatalf("empty blob read %d bytes", len(b))
		}
	})

	t.Run("UnknownSize", func(t *testing.T) {
		s := open(t)
		data := Data(2, 70000)
		d := blob.FromBytes(data)
		info, err := s.Put(ctx, d, -1, bytes.NewReader(data))
		if err != nil || info.Size != int64(len(data)) {
			t.Fatalf("Put size -1 = %+v, %v", info, err)
		}
		if !bytes.Equal(read(t, s, d, 0), data) {
			t.Fatal("read back differs")
		}
	})

	t.Run("PutExistingReadsNothing", func(t *testing.T) {
		s := open(t)
		data := Data(3, 1000)
		first := put(t, s, data)
		cr := &CountingReader{R: bytes.NewReader(data)}
		info, err := s.Put(ctx, first.Digest, int64(len(data)), cr)
		if err != nil {
			t.Fatal(err)
		}
		if cr.N() != 0 {
			t.Errorf("second Put read %d bytes; want 0 (the blob was there)", cr.N())
		}
		if info.Digest != first.Digest || info.Size != first.Size {
			t.Errorf("second Put = %+v, want %+v", info, first)
		}
	})

	t.Run("MismatchedDigestStoresNothing", func(t *testing.T) {
		s := open(t)
		data := Data(4, 50000)
		wrong := blob.FromBytes([]byte("something else"))
		_, err := s.Put(ctx, wrong, int64(len(data)), bytes.NewReader(data))
		if !errors.Is(err, blob.ErrMismatch) {
			t.Fatalf("Put under the wrong digest: got %v, want ErrMismatch", err)
		}
		var me *blob.MismatchError
		if !errors.As(err, &me) || me.Got != blob.FromBytes(data) || me.Want != wrong {
			t.Errorf("error %v does not name expected %s and got %s", err, wrong, blob.FromBytes(data))
		}
		absent(t, s, wrong)
		absent(t, s, blob.FromBytes(data))
	})

	t.Run("MismatchedSizeStoresNothing", func(t *testing.T) {
		s := open(t)
		data := Data(5, 50000)
		d := blob.FromBytes(data)
		for _, size := range []int64{int64(len(data)) - 1, int64(len(data)) + 1, 0} {
			if _, err := s.Put(ctx, d, size, bytes.NewReader(data)); !errors.Is(err, blob.ErrMismatch) {
				t.Fatalf("Put with size %d of %d bytes: got %v, want ErrMismatch", size, len(data), err)
			}
			absent(t, s, d)
		}
	})

	t.Run("CutOffReaderStoresNothing", func(t *testing.T) {
		s := open(t)
		data := Data(6, 200<<10)
		d := blob.FromBytes(data)
		for _, size := range []int64{int64(len(data)), -1} {
			_, err := s.Put(ctx, d, size, &CutReader{Data: data, Cut: len(data) / 2})
			if !errors.Is(err, ErrCut) {
				t.Fatalf("Put of a cut-off reader (size %d): got %v, want the reader's error", size, err)
			}
			absent(t, s, d)
		}
		put(t, s, data) // and a retry works
	})

	t.Run("CanceledContextStoresNothing", func(t *testing.T) {
		s := open(t)
		data := Data(7, 100<<10)
		d := blob.FromBytes(data)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, d, int64(len(data)), bytes.NewReader(data)); err == nil {
			t.Fatal("Put with a canceled context succeeded")
		}
		absent(t, s, d)
	})

	t.Run("InvalidDigest", func(t *testing.T) {
		s := open(t)
		for _, d := range []blob.Digest{"", "sha256:abc", blob.Digest("SHA256:" + string(blob.FromBytes(nil))[7:]), blob.Digest("sha256:" + string(bytes.Repeat([]byte("A"), 64)))} {
			if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrInvalid) {
				t.Errorf("Stat(%q): got %v, want ErrInvalid", d, err)
			}
			if _, err := s.Put(ctx, d, 0, bytes.NewReader(nil)); !errors.Is(err, blob.ErrInvalid) {
				t.Errorf("Put(%q): got %v, want ErrInvalid", d, err)
			}
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := open(t)
		d := blob.FromBytes([]byte("never stored"))
		if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat: got %v, want ErrNotFound", err)
		}
		if _, err := s.Open(ctx, d, 0); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open: got %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Delete: got %v, want ErrNotFound", err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		a, b := put(t, s, Data(8, 100)), put(t, s, Data(9, 100))
		if err := s.Delete(ctx, a.Digest); err != nil {
			t.Fatal(err)
		}
		absent(t, s, a.Digest)
		if _, err := s.Stat(ctx, b.Digest); err != nil {
			t.Fatalf("the other blob: %v", err)
		}
		put(t, s, Data(8, 100)) // put again after delete
	})

	t.Run("ListPaging", func(t *testing.T) {
		s := open(t)
		if l, err := s.List(ctx, "", 10); err != nil || len(l) != 0 {
			t.Fatalf("List of an empty store = %v, %v", l, err)
		}
		var want []string
		sizes := map[blob.Digest]int64{}
		for i := range 23 {
			info := put(t, s, Data(uint64(100+i), 10+i))
			want = append(want, string(info.Digest))
			sizes[info.Digest] = info.Size
		}
		sort.Strings(want)
		var got []string
		after := blob.Digest("")
		for page := 0; ; page++ {
			l, err := s.List(ctx, after, 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(l) > 5 {
				t.Fatalf("page %d has %d entries, limit 5", page, len(l))
			}
			for _, i := range l {
				if i.Size != sizes[i.Digest] {
					t.Errorf("List: %s size %d, want %d", i.Digest, i.Size, sizes[i.Digest])
				}
				got = append(got, string(i.Digest))
			}
			if len(l) < 5 {
				break
			}
			after = l[len(l)-1].Digest
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("paged List =\n%v\nwant (sorted)\n%v", got, want)
		}
		all, err := s.List(ctx, "", 0)
		if err != nil || len(all) != len(want) {
			t.Fatalf("List limit 0 (default) = %d entries, %v; want %d", len(all), err, len(want))
		}
		if l, err := s.List(ctx, blob.Digest(want[len(want)-1]), 5); err != nil || len(l) != 0 {
			t.Fatalf("List after the last = %v, %v", l, err)
		}
		if _, err := s.List(ctx, "bogus", 5); !errors.Is(err, blob.ErrInvalid) {
			t.Errorf("List after a bad digest: got %v, want ErrInvalid", err)
		}
	})

	t.Run("ConcurrentPutsOfOneBlob", func(t *testing.T) {
		s := open(t)
		data := Data(10, 1<<20)
		d := blob.FromBytes(data)
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = s.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
			})
		}
		// Readers during the race see the whole blob or nothing.
		for range 20 {
			if rc, err := s.Open(ctx, d, 0); err == nil {
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(b, data) {
					t.Errorf("a read during concurrent Puts got %d bytes (%v), want all %d", len(b), err, len(data))
				}
			} else if !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Open during concurrent Puts: %v", err)
			}
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
		}
		if !bytes.Equal(read(t, s, d, 0), data) {
			t.Fatal("read back differs")
		}
		if l, err := s.List(ctx, "", 0); err != nil || len(l) != 1 {
			t.Fatalf("List after concurrent Puts = %v, %v; want one blob", l, err)
		}
	})
}
