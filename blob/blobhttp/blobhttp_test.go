package blobhttp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/blob/blobtest"
)

const token = "s3cret"

// env is a real HTTP server (loopback) serving the API over an FS store in a temp dir.
type env struct {
	store  *blob.FS
	srv    *httptest.Server
	client *blobhttp.Client
	// bodyRead is set when the handler read any byte of a request body.
	bodyRead atomic.Bool
	// served gets a value each time a request's handler returned.
	served chan struct{}
}

// recordingBody records whether anything read the request body.
type recordingBody struct {
	io.ReadCloser
	read *atomic.Bool
}

func (r *recordingBody) Read(p []byte) (int, error) {
	r.read.Store(true)
	return r.ReadCloser.Read(p)
}

func newEnv(t *testing.T, opts blobhttp.Options) *env {
	t.Helper()
	return newEnvServer(t, opts, nil)
}

// newEnvServer is newEnv with a hook to configure the http.Server before it starts.
func newEnvServer(t *testing.T, opts blobhttp.Options, config func(*http.Server)) *env {
	t.Helper()
	st, err := blob.OpenFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st, served: make(chan struct{}, 100)}
	if opts.Authorize == nil {
		opts.Authorize = func(r *http.Request) error {
			if r.Header.Get("Authorization") != "Bearer "+token {
				return errors.New("bad or missing bearer token")
			}
			return nil
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := blobhttp.NewHandler(st, opts)
	mux := http.NewServeMux()
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = &recordingBody{ReadCloser: r.Body, read: &e.bodyRead}
		defer func() { e.served <- struct{}{} }()
		h.ServeHTTP(w, r)
	})
	mux.Handle(blobhttp.Prefix, wrapped)
	mux.Handle(blobhttp.Prefix+"/", wrapped)
	e.srv = httptest.NewUnstartedServer(mux)
	if config != nil {
		config(e.srv.Config)
	}
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	e.client = &blobhttp.Client{BaseURL: e.srv.URL, Token: token, HTTP: &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}}
	return e
}

// drain empties the served channel (after requests whose end does not matter).
func (e *env) drain() {
	for {
		select {
		case <-e.served:
		default:
			return
		}
	}
}

func assertAbsent(t *testing.T, e *env, d blob.Digest) {
	t.Helper()
	if _, err := e.store.Stat(context.Background(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("%s is in the store (%v); want nothing stored", d, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.store.Dir(), "tmp")); len(ents) != 0 {
		t.Fatalf("%d temp files left in the store", len(ents))
	}
}

func TestUploadAndSkipWhenPresent(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	ctx := context.Background()
	data := blobtest.Data(1, 3<<20+5)
	d := blob.FromBytes(data)
	var last, total int64
	info, uploaded, err := e.client.Put(ctx, d, bytes.NewReader(data), int64(len(data)), func(done, tot int64) { last, total = done, tot })
	if err != nil || !uploaded || info.Digest != d || info.Size != int64(len(data)) {
		t.Fatalf("Put = %+v, uploaded %v, %v", info, uploaded, err)
	}
	if last != int64(len(data)) || total != int64(len(data)) {
		t.Errorf("progress ended at %d/%d, want %d/%d", last, total, len(data), len(data))
	}
	b, err := os.ReadFile(e.store.Path(d))
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("stored file: %d bytes, %v", len(b), err)
	}

	// Again: the HEAD finds it, nothing is read from the reader.
	cr := &blobtest.CountingReader{R: bytes.NewReader(data)}
	info2, uploaded, err := e.client.Put(ctx, d, cr, int64(len(data)), nil)
	if err != nil || uploaded || info2.Size != info.Size {
		t.Fatalf("second Put = %+v, uploaded %v, %v; want skipped", info2, uploaded, err)
	}
	if cr.N() != 0 {
		t.Errorf("second Put read %d bytes of the file; want 0", cr.N())
	}

	// A raw PUT of an existing blob answers 200 at once without reading the body.
	e.drain()
	e.bodyRead.Store(false)
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+blobhttp.Prefix+"/"+string(d), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-e.served
	if resp.StatusCode != http.StatusOK || e.bodyRead.Load() {
		t.Errorf("PUT of an existing blob: %d, body read %v; want 200 without reading", resp.StatusCode, e.bodyRead.Load())
	}

	// Stat (HEAD) and PutFile of the same bytes.
	st, err := e.client.Stat(ctx, d)
	if err != nil || st.Size != int64(len(data)) || st.ModTime.IsZero() {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, data, 0o600)
	if info, uploaded, err := e.client.PutFile(ctx, path, nil); err != nil || uploaded || info.Digest != d {
		t.Fatalf("PutFile of a present blob = %+v, %v, %v", info, uploaded, err)
	}
	other := filepath.Join(t.TempDir(), "g")
	os.WriteFile(other, []byte("another file"), 0o600)
	if info, uploaded, err := e.client.PutFile(ctx, other, nil); err != nil || !uploaded || info.Digest != blob.FromBytes([]byte("another file")) {
		t.Fatalf("PutFile = %+v, %v, %v", info, uploaded, err)
	}
}

func TestMismatchStoresNothing(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	data := []byte("the real content")
	wrong := blob.FromBytes([]byte("what the caller thought"))
	_, _, err := e.client.Put(context.Background(), wrong, bytes.NewReader(data), int64(len(data)), nil)
	if !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("Put under the wrong digest: %v; want ErrMismatch", err)
	}
	want := fmt.Sprintf("the body's sha256 is %s, not the %s named in the URL (nothing stored): upload the file whose digest you named", blob.FromBytes(data), wrong)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q\nwant it to contain %q", err, want)
	}
	var he *blobhttp.Error
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
		t.Errorf("error %v: want an *Error with status 400", err)
	}
	assertAbsent(t, e, wrong)
	assertAbsent(t, e, blob.FromBytes(data))
}

// TestCutOffUpload: a client that closes its connection half way through stores nothing,
// and a retry succeeds.
func TestCutOffUpload(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	data := blobtest.Data(2, 1<<20)
	d := blob.FromBytes(data)

	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", blobhttp.Prefix, d, token, len(data))
	conn.Write(data[:len(data)/2])
	conn.Close()
	<-e.served // the handler has finished with the cut upload
	assertAbsent(t, e, d)

	// The Go client with a reader that fails half way: an error, nothing stored.
	e.drain()
	_, _, err = e.client.Put(context.Background(), d, &blobtest.CutReader{Data: data, Cut: len(data) / 2}, int64(len(data)), nil)
	if err == nil {
		t.Fatal("Put of a cut-off reader succeeded")
	}
	<-e.served // the HEAD
	<-e.served // the cut PUT
	assertAbsent(t, e, d)

	info, uploaded, err := e.client.Put(context.Background(), d, bytes.NewReader(data), int64(len(data)), nil)
	if err != nil || !uploaded || info.Size != int64(len(data)) {
		t.Fatalf("retry: %+v, %v, %v", info, uploaded, err)
	}
}

func TestStalledUploadIsCut(t *testing.T) {
	e := newEnv(t, blobhttp.Options{IdleTimeout: 300 * time.Millisecond})
	data := blobtest.Data(3, 100000)
	d := blob.FromBytes(data)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", blobhttp.Prefix, d, token, len(data))
	conn.Write(data[:1000])
	// ... and nothing more: the server must give up rather than wait forever.
	<-e.served
	assertAbsent(t, e, d)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "stalled") {
			t.Errorf("stalled upload answered %d %s; want 408 saying it stalled", resp.StatusCode, b)
		}
	} // else: the server closed the connection, which is also a cut
}

func TestUnauthorizedBeforeBody(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	data := blobtest.Data(4, 1<<20)
	d := blob.FromBytes(data)

	// A raw request with a body: 401, and the handler never read a byte of it.
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+blobhttp.Prefix+"/"+string(d), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	<-e.served
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "Authorization: Bearer") {
		t.Fatalf("wrong token: %d %s; want 401 saying how to send the token", resp.StatusCode, b)
	}
	if e.bodyRead.Load() {
		t.Fatal("the handler read the body of an unauthorized request")
	}
	assertAbsent(t, e, d)

	// The Go client sends "Expect: 100-continue": the refused body never leaves the client.
	bad := &blobhttp.Client{BaseURL: e.srv.URL, Token: "wrong", HTTP: e.client.HTTP}
	cr := &blobtest.CountingReader{R: bytes.NewReader(data)}
	_, _, err = bad.Put(context.Background(), d, cr, int64(len(data)), nil)
	if !errors.Is(err, blobhttp.ErrUnauthorized) {
		t.Fatalf("Put with a wrong token: %v; want ErrUnauthorized", err)
	}
	if cr.N() != 0 {
		t.Errorf("the client sent %d body bytes to a server that refused it", cr.N())
	}
	// A token that may read but not write: the HEAD passes, the PUT is refused, and the
	// client (which sends "Expect: 100-continue") never sends the body.
	ro := newEnv(t, blobhttp.Options{Authorize: func(r *http.Request) error {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return errors.New("this token may only read")
		}
		return nil
	}})
	cr = &blobtest.CountingReader{R: bytes.NewReader(data)}
	_, _, err = ro.client.Put(context.Background(), d, cr, int64(len(data)), nil)
	if !errors.Is(err, blobhttp.ErrUnauthorized) || !strings.Contains(err.Error(), "this token may only read") {
		t.Fatalf("Put with a read-only token: %v; want ErrUnauthorized with the reason", err)
	}
	<-ro.served
	<-ro.served
	if cr.N() != 0 || ro.bodyRead.Load() {
		t.Errorf("a refused upload moved body bytes: client sent %d, handler read %v", cr.N(), ro.bodyRead.Load())
	}
	assertAbsent(t, ro, d)

	for _, f := range []func() error{
		func() error { _, err := bad.Stat(context.Background(), d); return err },
		func() error { _, _, err := bad.List(context.Background(), "", 0); return err },
		func() error { return bad.Delete(context.Background(), d) },
		func() error { _, err := bad.Get(context.Background(), d, io.Discard, 0, nil); return err },
	} {
		if err := f(); !errors.Is(err, blobhttp.ErrUnauthorized) {
			t.Errorf("with a wrong token: %v; want ErrUnauthorized", err)
		}
	}
}

func TestBadDigestInURL(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	for _, p := range []string{"sha256:xyz", "md5:abc", strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64)} {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+blobhttp.Prefix+"/"+p, strings.NewReader("data"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error, Code string }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || body.Code != blobhttp.CodeInvalid || !strings.Contains(body.Error, `"sha256:" followed by 64 lowercase hex digits`) {
			t.Errorf("PUT %s: %d %+v; want 400 naming the digest form", p, resp.StatusCode, body)
		}
	}
	if _, err := e.client.Stat(context.Background(), "sha256:nope"); !errors.Is(err, blob.ErrInvalid) {
		t.Errorf("client Stat of a bad digest: %v", err)
	}
}

func TestRangeAndResume(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	ctx := context.Background()
	data := blobtest.Data(5, 2<<20+3)
	d := blob.FromBytes(data)
	if _, _, err := e.client.Put(ctx, d, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	n := int64(len(data))

	// Raw ranges.
	for _, tt := range []struct {
		rng        string
		status     int
		start, end int64 // served bytes [start, end)
		cr         string
	}{
		{"", 200, 0, n, ""},
		{"bytes=100-", 206, 100, n, fmt.Sprintf("bytes 100-%d/%d", n-1, n)},
		{"bytes=10-19", 206, 10, 20, fmt.Sprintf("bytes 10-19/%d", n)},
		{"bytes=-5", 206, n - 5, n, fmt.Sprintf("bytes %d-%d/%d", n-5, n-1, n)},
		{fmt.Sprintf("bytes=%d-", n), 416, 0, 0, fmt.Sprintf("bytes */%d", n)},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+blobhttp.Prefix+"/"+string(d), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if tt.rng != "" {
			req.Header.Set("Range", tt.rng)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Range") != tt.cr {
			t.Errorf("Range %q: %d %q; want %d %q", tt.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tt.status, tt.cr)
			continue
		}
		if tt.status < 300 && !bytes.Equal(b, data[tt.start:tt.end]) {
			t.Errorf("Range %q: got %d bytes, want bytes %d..%d", tt.rng, len(b), tt.start, tt.end)
		}
	}

	// Client.Get from an offset.
	var buf bytes.Buffer
	info, err := e.client.Get(ctx, d, &buf, 1000, nil)
	if err != nil || info.Size != n || !bytes.Equal(buf.Bytes(), data[1000:]) {
		t.Fatalf("Get from 1000: %+v, %d bytes, %v", info, buf.Len(), err)
	}

	// From the very end: nothing to send, no error; past it: ErrInvalid.
	buf.Reset()
	if info, err := e.client.Get(ctx, d, &buf, n, nil); err != nil || info.Size != n || buf.Len() != 0 {
		t.Fatalf("Get from the end: %+v, %d bytes, %v", info, buf.Len(), err)
	}
	if _, err := e.client.Get(ctx, d, &buf, n+1, nil); !errors.Is(err, blob.ErrInvalid) {
		t.Fatalf("Get from past the end: %v; want ErrInvalid", err)
	}

	// GetFile resumes a partial file.
	path := filepath.Join(t.TempDir(), "out")
	os.WriteFile(path, data[:n/3], 0o600)
	var first int64 = -1
	if _, err := e.client.GetFile(ctx, d, path, func(done, total int64) {
		if first < 0 {
			first = done
		}
	}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
		t.Fatalf("resumed file differs (%d bytes)", len(b))
	}
	if first != n/3 {
		t.Errorf("progress started at %d; want %d (the part already there)", first, n/3)
	}
	// A partial file that is not a prefix of the blob is found out and removed.
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := e.client.GetFile(ctx, d, path, nil); !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("GetFile over a wrong partial file: %v; want ErrMismatch", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the wrong file was left at %s", path)
	}
	if _, err := e.client.GetFile(ctx, d, path, nil); err != nil {
		t.Fatalf("GetFile after removing the bad file: %v", err)
	}

	// Not found.
	missing := blob.FromBytes([]byte("missing"))
	if _, err := e.client.Get(ctx, missing, io.Discard, 0, nil); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Get of a missing blob: %v; want ErrNotFound", err)
	}
	if _, err := e.client.Stat(ctx, missing); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a missing blob: %v; want ErrNotFound", err)
	}
}

func TestListAndDelete(t *testing.T) {
	e := newEnv(t, blobhttp.Options{})
	ctx := context.Background()
	var want []blob.Digest
	for i := range 7 {
		data := blobtest.Data(uint64(10+i), 100+i)
		info, _, err := e.client.Put(ctx, blob.FromBytes(data), bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, info.Digest)
	}
	var got []blob.Digest
	after := blob.Digest("")
	for {
		l, next, err := e.client.List(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range l {
			got = append(got, i.Digest)
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d blobs, want %d", len(got), len(want))
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Fatalf("list not sorted: %v", got)
		}
	}
	if err := e.client.Delete(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Delete(ctx, want[0]); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("second Delete: %v; want ErrNotFound", err)
	}
	if _, err := e.client.Stat(ctx, want[0]); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after Delete: %v", err)
	}
	if _, _, err := e.client.List(ctx, "", blobhttp.MaxListLimit+1); !errors.Is(err, blob.ErrInvalid) {
		t.Errorf("List with too large a limit: %v; want ErrInvalid", err)
	}
}

func TestMaxBlobBytes(t *testing.T) {
	e := newEnv(t, blobhttp.Options{MaxBlobBytes: 1000})
	ctx := context.Background()
	data := blobtest.Data(6, 5000)
	d := blob.FromBytes(data)
	// Known size: refused before the body is read.
	cr := &blobtest.CountingReader{R: bytes.NewReader(data)}
	if _, _, err := e.client.Put(ctx, d, cr, int64(len(data)), nil); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("Put over the limit: %v; want ErrTooLarge", err)
	}
	if cr.N() != 0 {
		t.Errorf("the client sent %d bytes of a blob the server refused by its size", cr.N())
	}
	// Unknown size (chunked): cut when it passes the limit.
	if _, _, err := e.client.Put(ctx, d, io.MultiReader(bytes.NewReader(data)), -1, nil); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("chunked Put over the limit: %v; want ErrTooLarge", err)
	}
	assertAbsent(t, e, d)
}

func TestClientServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := &blobhttp.Client{BaseURL: "http://" + addr, Token: token}
	_, err = c.Stat(context.Background(), blob.FromBytes(nil))
	if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Stat with no server: %v; want ErrUnavailable naming the address", err)
	}
}

// TestLargeUploadDownloadMemory sends 512 MiB through Client.Put and back with
// Client.Get (client and server in this process) and checks the heap stays small.
func TestLargeUploadDownloadMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 512 MiB twice; skipped with -short")
	}
	e := newEnv(t, blobhttp.Options{})
	const n = 512 << 20
	d := blobtest.StreamDigest(t, 9, n)
	stop := blobtest.WatchHeap()
	_, uploaded, err := e.client.Put(context.Background(), d, blobtest.NewStream(9, n), n, nil)
	if err != nil || !uploaded {
		t.Fatal(uploaded, err)
	}
	info, err := e.client.Get(context.Background(), d, io.Discard, 0, nil) // verifies the digest
	peak := stop()
	if err != nil || info.Size != n {
		t.Fatal(info, err)
	}
	t.Logf("Put + Get of %d MiB over HTTP: peak HeapInuse growth %.1f MiB", n>>20, float64(peak)/(1<<20))
	if peak > 32<<20 {
		t.Errorf("heap grew by %d bytes; want under 32 MiB (the data must stream)", peak)
	}
}

// slowReader hands out its data in small pieces with a pause before each.
type slowReader struct {
	data  []byte
	piece int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	n := copy(p[:min(len(p), s.piece)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestUploadOutlastsServerTimeouts: an upload that takes longer than the http.Server's
// ReadTimeout and WriteTimeout, but never stalls for IdleTimeout, succeeds (the handler's
// idle deadlines replace the server's for blob bodies, and the answer gets its own).
func TestUploadOutlastsServerTimeouts(t *testing.T) {
	e := newEnvServer(t, blobhttp.Options{IdleTimeout: 5 * time.Second}, func(s *http.Server) {
		s.ReadTimeout = 300 * time.Millisecond
		s.WriteTimeout = 300 * time.Millisecond
	})
	data := blobtest.Data(12, 64<<10)
	d := blob.FromBytes(data)
	_, uploaded, err := e.client.Put(context.Background(), d, &slowReader{data: data, piece: 8 << 10, pause: 100 * time.Millisecond}, int64(len(data)), nil)
	if err != nil || !uploaded {
		t.Fatalf("a slow but steady upload (~0.8s, server timeouts 0.3s): %v", err)
	}
}
