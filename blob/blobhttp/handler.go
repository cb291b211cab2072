package blobhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// Prefix is the path the API lives under.
const Prefix = "/v1/blobs"

// MaxListLimit is the largest page a list request may ask for.
const MaxListLimit = 10000

// DefaultIdleTimeout is Options.IdleTimeout when zero.
const DefaultIdleTimeout = time.Minute

// Options configures the handler.
type Options struct {
	// Authorize checks a request before anything else (before any body byte is read);
	// an error gives 401 with the error's text. Nil allows every request.
	Authorize func(*http.Request) error
	// MaxBlobBytes refuses uploads larger than this with 413 (0: no limit).
	MaxBlobBytes int64
	// IdleTimeout cuts an upload (or download) that moves no byte for this long
	// (0: DefaultIdleTimeout). For blob bodies these per-read and per-write deadlines
	// replace the http.Server's ReadTimeout and WriteTimeout, which a large blob would
	// outlast.
	IdleTimeout time.Duration
	// Logger gets one line per failed request (nil: slog.Default()).
	Logger *slog.Logger
}

// Error codes in JSON error bodies.
const (
	CodeInvalid      = "invalid"
	CodeNotFound     = "not_found"
	CodeMismatch     = "mismatch"
	CodeTooLarge     = "too_large"
	CodeUnavailable  = "unavailable"
	CodeUnauthorized = "unauthorized"
	CodeTimeout      = "timeout"
	CodeInternal     = "internal"
)

type handler struct {
	store blob.Store
	opts  Options
	log   *slog.Logger
}

// NewHandler returns the HTTP API over store. Mount it at Prefix and Prefix+"/".
func NewHandler(store blob.Store, opts Options) http.Handler {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &handler{store: store, opts: opts, log: log}
}

// infoJSON is a blob in JSON bodies.
type infoJSON struct {
	Digest  blob.Digest `json:"digest"`
	Size    int64       `json:"size"`
	ModTime time.Time   `json:"mod_time"`
}

// listJSON is the body of a list response.
type listJSON struct {
	Blobs []infoJSON  `json:"blobs"`
	Next  blob.Digest `json:"next"`
}

// errorJSON is the body of an error response.
type errorJSON struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func toJSON(i blob.Info) infoJSON {
	return infoJSON{Digest: i.Digest, Size: i.Size, ModTime: i.ModTime.UTC()}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.opts.Authorize != nil {
		if err := h.opts.Authorize(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="paddock"`)
			msg := "unauthorized: " + err.Error()
			if !strings.Contains(msg, "Authorization: Bearer") { // the authorizer's own hint is enough
				msg += ": send the client token as \"Authorization: Bearer <token>\""
			}
			h.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, msg)
			return
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no such path %q: the blob API is under %s/", r.URL.Path, Prefix))
		return
	}
	if rest == "" || rest == "/" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			h.fail(w, r, http.StatusMethodNotAllowed, CodeInvalid, fmt.Sprintf("%s %s: only GET lists blobs; PUT, GET, HEAD and DELETE go to %s/sha256:<hex>", r.Method, Prefix, Prefix))
			return
		}
		h.list(w, r)
		return
	}
	d, err := blob.ParseDigest(strings.TrimPrefix(rest, "/"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("bad digest in the URL %s: %v", r.URL.Path, errText(err)))
		return
	}
	switch r.Method {
	case http.MethodPut:
		h.put(w, r, d)
	case http.MethodGet, http.MethodHead:
		h.get(w, r, d)
	case http.MethodDelete:
		if err := h.store.Delete(r.Context(), d); err != nil {
			h.storeFail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "PUT, GET, HEAD, DELETE")
		h.fail(w, r, http.StatusMethodNotAllowed, CodeInvalid, fmt.Sprintf("method %s on a blob: use PUT, GET, HEAD or DELETE", r.Method))
	}
}

func (h *handler) put(w http.ResponseWriter, r *http.Request, d blob.Digest) {
	ctx := r.Context()
	size := r.ContentLength // -1 when unknown (chunked)
	if h.opts.MaxBlobBytes > 0 && size > h.opts.MaxBlobBytes {
		h.fail(w, r, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("blob %s is %d bytes, more than this server's limit of %d: split the data, or raise the server's limit", d, size, h.opts.MaxBlobBytes))
		return
	}
	if info, err := h.store.Stat(ctx, d); err == nil {
		if size >= 0 && size != info.Size {
			// Nothing to store, but say so: the caller's file is not the blob it named.
			h.fail(w, r, http.StatusBadRequest, CodeMismatch, mismatchText(&blob.MismatchError{Want: d, WantSize: info.Size, GotSize: size}))
			return
		}
		noBody(w, r)
		writeJSON(w, http.StatusOK, toJSON(info))
		return
	} else if !errors.Is(err, blob.ErrNotFound) {
		h.storeFail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	body := &idleReader{r: r.Body, rc: rc, idle: h.opts.IdleTimeout, max: h.opts.MaxBlobBytes}
	info, err := h.store.Put(ctx, d, size, body)
	// The upload may have outlasted the server's WriteTimeout: give the answer its own
	// deadline (net/http clears it after the request).
	setWriteDeadline(rc, time.Now().Add(h.opts.IdleTimeout))
	if err != nil {
		switch {
		case body.timedOut:
			h.fail(w, r, http.StatusRequestTimeout, CodeTimeout, fmt.Sprintf("upload of %s stalled: no byte for %s after %d bytes (nothing stored): retry the upload", d, h.opts.IdleTimeout, body.n))
		case body.tooLarge:
			h.fail(w, r, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("upload of %s is more than this server's limit of %d bytes (nothing stored): split the data, or raise the server's limit", d, h.opts.MaxBlobBytes))
		case body.readErr != nil && !errors.Is(err, blob.ErrMismatch):
			h.fail(w, r, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("upload of %s was cut off after %d bytes (%v); nothing stored: retry the upload", d, body.n, body.readErr))
		default:
			h.storeFail(w, r, err)
		}
		return
	}
	writeJSON(w, http.StatusCreated, toJSON(info))
}

// idleReader reads a request body, giving each Read at most idle to return (through the
// connection's read deadline), and failing once more than max bytes came (max > 0).
type idleReader struct {
	r        io.Reader
	rc       *http.ResponseController
	idle     time.Duration
	max      int64
	n        int64
	timedOut bool
	tooLarge bool
	readErr  error
}

func (b *idleReader) Read(p []byte) (int, error) {
	if err := b.rc.SetReadDeadline(time.Now().Add(b.idle)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.max > 0 && b.n > b.max {
		b.tooLarge = true
		return n, fmt.Errorf("%w: more than %d bytes", blob.ErrTooLarge, b.max)
	}
	if err != nil && err != io.EOF {
		b.readErr = err
		if errors.Is(err, os.ErrDeadlineExceeded) {
			b.timedOut = true
		}
	}
	return n, err
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, d blob.Digest) {
	ctx := r.Context()
	info, err := h.store.Stat(ctx, d)
	if err != nil {
		h.storeFail(w, r, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("ETag", `"`+string(d)+`"`)
	hdr.Set("Last-Modified", info.ModTime.UTC().Format(http.TimeFormat))
	hdr.Set("Content-Type", "application/octet-stream")
	start, end, partial, ok := parseRange(r.Header.Get("Range"), info.Size)
	if !ok {
		hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
		h.fail(w, r, http.StatusRequestedRangeNotSatisfiable, CodeInvalid, fmt.Sprintf("range %q does not fit blob %s of %d bytes: ask for bytes=N- with N at most %d", r.Header.Get("Range"), d, info.Size, info.Size))
		return
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, info.Size))
	}
	hdr.Set("Content-Length", strconv.FormatInt(end-start, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	rc, err := h.store.Open(ctx, d, start)
	if err != nil {
		hdr.Del("Content-Length")
		hdr.Del("Content-Range")
		h.storeFail(w, r, err)
		return
	}
	defer rc.Close()
	w.WriteHeader(status)
	ctl := http.NewResponseController(w)
	dw := &idleWriter{w: w, rc: ctl, idle: h.opts.IdleTimeout}
	if _, err := blob.CopyContext(ctx, dw, io.LimitReader(rc, end-start)); err != nil {
		h.log.Info("blob download cut off", "digest", d, "remote", r.RemoteAddr, "err", err)
		return
	}
	setWriteDeadline(ctl, time.Now().Add(h.opts.IdleTimeout)) // for the final flush
}

// setWriteDeadline sets the connection's write deadline where the ResponseWriter can.
func setWriteDeadline(rc *http.ResponseController, t time.Time) {
	rc.SetWriteDeadline(t) // http.ErrNotSupported: nothing to do
}

// idleWriter gives each Write at most idle to finish (a stalled downloader is cut).
type idleWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	idle time.Duration
}

func (i *idleWriter) Write(p []byte) (int, error) {
	setWriteDeadline(i.rc, time.Now().Add(i.idle))
	return i.w.Write(p)
}

// parseRange reads a Range header for a blob of size bytes and returns the byte span
// [start, end). One range is served (bytes=N-, N-M, -N); anything this server does not
// serve (several ranges, other units) gives the whole blob, as RFC 9110 allows. ok is
// false for a range that cannot be satisfied.
func parseRange(h string, size int64) (start, end int64, partial, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size, false, true
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, size, false, true
	}
	if a == "" { // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, size, false, true
		}
		if n == 0 {
			return 0, 0, false, false
		}
		return max(size-n, 0), size, true, true
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 {
		return 0, size, false, true
	}
	e := size
	if b != "" {
		last, err := strconv.ParseInt(b, 10, 64)
		if err != nil || last < s {
			return 0, size, false, true
		}
		e = min(last+1, size)
	}
	if s >= size && !(s == 0 && size == 0) {
		return 0, 0, false, false
	}
	return s, e, true, true
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after := blob.Digest(q.Get("after"))
	if after != "" {
		if err := after.Validate(); err != nil {
			h.fail(w, r, http.StatusBadRequest, CodeInvalid, "query parameter after: "+errText(err))
			return
		}
	}
	limit := blob.DefaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			h.fail(w, r, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("query parameter limit=%q: want a number from 1 to %d", s, MaxListLimit))
			return
		}
		limit = n
	}
	infos, err := h.store.List(r.Context(), after, limit)
	if err != nil {
		h.storeFail(w, r, err)
		return
	}
	out := listJSON{Blobs: make([]infoJSON, 0, len(infos))}
	for _, i := range infos {
		out.Blobs = append(out.Blobs, toJSON(i))
	}
	if len(infos) == limit {
		out.Next = infos[len(infos)-1].Digest
	}
	writeJSON(w, http.StatusOK, out)
}

// storeFail answers with the status of a store error's class.
func (h *handler) storeFail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, CodeInternal
	switch {
	case errors.Is(err, blob.ErrNotFound):
		status, code = http.StatusNotFound, CodeNotFound
	case errors.Is(err, blob.ErrMismatch):
		status, code = http.StatusBadRequest, CodeMismatch
	case errors.Is(err, blob.ErrInvalid):
		status, code = http.StatusBadRequest, CodeInvalid
	case errors.Is(err, blob.ErrTooLarge):
		status, code = http.StatusRequestEntityTooLarge, CodeTooLarge
	case errors.Is(err, syscall.ENOSPC):
		status, code = http.StatusInsufficientStorage, CodeUnavailable
	case errors.Is(err, blob.ErrUnavailable):
		status, code = http.StatusServiceUnavailable, CodeUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, code = http.StatusServiceUnavailable, CodeUnavailable
	}
	if status == http.StatusServiceUnavailable || status == http.StatusInsufficientStorage {
		w.Header().Set("Retry-After", "10")
	}
	msg := errText(err)
	var me *blob.MismatchError
	if errors.As(err, &me) {
		msg = mismatchText(me)
	}
	h.fail(w, r, status, code, msg)
}

// mismatchText says, in the API's terms, how an upload differs from the blob its URL names.
func mismatchText(e *blob.MismatchError) string {
	switch {
	case e.Got != "":
		return fmt.Sprintf("the body's sha256 is %s, not the %s named in the URL (nothing stored): upload the file whose digest you named", e.Got, e.Want)
	case e.GotSize < 0:
		return fmt.Sprintf("the body is longer than %d bytes, the size of %s (nothing stored): upload the file whose digest you named", e.WantSize, e.Want)
	default:
		return fmt.Sprintf("the body is %d bytes, but %s is %d bytes (nothing stored): upload the file whose digest you named, whole", e.GotSize, e.Want, e.WantSize)
	}
}

// errText is an error's text without the leading class sentinel ("invalid blob request: ").
func errText(err error) string {
	s := err.Error()
	for _, c := range []error{blob.ErrInvalid, blob.ErrNotFound, blob.ErrUnavailable, blob.ErrTooLarge, blob.ErrMismatch} {
		if t, ok := strings.CutPrefix(s, c.Error()+": "); ok {
			return t
		}
	}
	return s
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	lv := slog.LevelInfo
	switch {
	case status >= 500:
		lv = slog.LevelWarn
	case status == http.StatusNotFound:
		lv = slog.LevelDebug // a HEAD before an upload finds nothing: normal
	}
	noBody(w, r)
	h.log.Log(r.Context(), lv, "blob request failed", "method", r.Method, "path", r.URL.Path, "status", status, "remote", r.RemoteAddr, "err", msg)
	if r.Method == http.MethodHead {
		w.Header().Set("X-Paddock-Error", code)
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, errorJSON{Error: msg, Code: code})
}

// noBody is called before answering a request whose body the handler did not (or not
// wholly) read. A client that sent "Expect: 100-continue" is still waiting to send it:
// "Connection: close" makes net/http close the connection after the answer rather than
// read the body, which would send "100 Continue" and have the client upload a body
// nobody wants. (net/http does this by itself, but not when middleware has wrapped
// r.Body.) Any other client is sending the body already; net/http's default, reading up
// to 256 KiB of it and otherwise half-closing after the answer, lets that client read the
// answer instead of having its connection reset under its writes.
func noBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 && r.Method != http.MethodGet && r.Method != http.MethodHead &&
		strings.Contains(strings.ToLower(r.Header.Get("Expect")), "100-continue") {
		w.Header().Set("Connection", "close")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
