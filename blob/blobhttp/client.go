package blobhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// ErrUnauthorized: the server refused the token (401).
var ErrUnauthorized = errors.New("unauthorized")

// Progress is told the bytes done so far and the total (-1 when unknown) as a transfer
// moves. It is called from the transferring goroutine; keep it quick.
type Progress func(done, total int64)

// Client talks to the blob API. The zero value is not usable: set BaseURL.
type Client struct {
	// BaseURL is the server's client address, e.g. "https://paddock.example:7443"
	// (the API's Prefix is added).
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// HTTP is the client to use (nil: http.DefaultClient). Its Transport should have an
	// ExpectContinueTimeout (http.DefaultTransport has 1s): then an upload the server
	// refuses or already has sends no body.
	HTTP *http.Client
}

// Error is an error answer from the server. It matches (errors.Is) the blob error
// class of its Code, and ErrUnauthorized for 401.
type Error struct {
	Op      string // what the client was doing, e.g. "PUT sha256:..."
	Status  int    // HTTP status
	Code    string // Code* constant ("" when the body said none)
	Message string // the server's explanation, with its fix
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Op, e.Message, e.Status)
}

// Is maps the error to blob's classes.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == blob.ErrNotFound
	case CodeMismatch:
		return target == blob.ErrMismatch
	case CodeInvalid:
		return target == blob.ErrInvalid
	case CodeTooLarge:
		return target == blob.ErrTooLarge
	case CodeUnavailable, CodeTimeout:
		return target == blob.ErrUnavailable
	case CodeUnauthorized:
		return target == ErrUnauthorized
	}
	switch {
	case e.Status == http.StatusUnauthorized:
		return target == ErrUnauthorized
	case e.Status == http.StatusNotFound:
		return target == blob.ErrNotFound
	case e.Status >= 500:
		return target == blob.ErrUnavailable
	}
	return false
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) blobURL(d blob.Digest) string {
	return strings.TrimRight(c.BaseURL, "/") + Prefix + "/" + string(d)
}

// do sends req with the token; network errors wrap blob.ErrUnavailable, and error
// statuses become *Error.
func (c *Client) do(req *http.Request, op string, ok ...int) (*http.Response, error) {
	if c.BaseURL == "" {
		return nil, fmt.Errorf("%s: %w: Client.BaseURL is empty: set it to the server's client address (e.g. https://host:port)", op, blob.ErrInvalid)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s: %w", op, ctxErr)
		}
		return nil, fmt.Errorf("%s: %w: cannot reach the server at %s (%w): check it runs and the address", op, blob.ErrUnavailable, c.BaseURL, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	e := &Error{Op: op, Status: resp.StatusCode, Code: resp.Header.Get("X-Paddock-Error")}
	var body errorJSON
	if req.Method != http.MethodHead && json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil {
		e.Code, e.Message = body.Code, body.Error
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
		if resp.StatusCode == http.StatusUnauthorized {
			e.Message = "the server refused the token: set the client token"
		}
	}
	return nil, e
}

// Stat returns the blob's Info (a HEAD request); an error matches blob.ErrNotFound when
// the server does not have it.
func (c *Client) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	op := "stat " + string(d)
	if err := d.Validate(); err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.blobURL(d), nil)
	if err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.do(req, op, http.StatusOK)
	if err != nil {
		return blob.Info{}, err
	}
	resp.Body.Close()
	return infoFromHeader(d, resp), nil
}

func infoFromHeader(d blob.Digest, resp *http.Response) blob.Info {
	info := blob.Info{Digest: d, Size: resp.ContentLength}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		info.ModTime = t
	}
	return info
}

// Put uploads size bytes (-1: unknown) of r as blob d, after a HEAD: when the server
// already has d, nothing is read from r and uploaded is false. The server verifies digest
// and size before storing; a mismatch matches blob.ErrMismatch and stores nothing.
// progress (may be nil) follows the bytes sent.
func (c *Client) Put(ctx context.Context, d blob.Digest, r io.Reader, size int64, progress Progress) (info blob.Info, uploaded bool, err error) {
	op := "uploading " + string(d)
	if err := d.Validate(); err != nil {
		return blob.Info{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if info, err := c.Stat(ctx, d); err == nil {
		if size >= 0 && info.Size != size {
			return blob.Info{}, false, fmt.Errorf("%s: %w", op, &blob.MismatchError{Want: d, WantSize: info.Size, GotSize: size})
		}
		if progress != nil {
			progress(info.Size, info.Size)
		}
		return info, false, nil
	} else if !errors.Is(err, blob.ErrNotFound) {
		return blob.Info{}, false, err
	}
	var body io.Reader = r
	if progress != nil {
		progress(0, size)
		body = &progressReader{r: r, total: size, fn: progress}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.blobURL(d), io.NopCloser(body))
	if err != nil {
		return blob.Info{}, false, fmt.Errorf("%s: %w", op, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue")
	resp, err := c.do(req, op, http.StatusOK, http.StatusCreated)
	if err != nil {
		return blob.Info{}, false, err
	}
	defer resp.Body.Close()
	var ij infoJSON
	if err := json.NewDecoder(resp.Body).Decode(&ij); err != nil {
		return blob.Info{}, false, fmt.Errorf("%s: reading the server's answer: %w", op, err)
	}
	return blob.Info{Digest: ij.Digest, Size: ij.Size, ModTime: ij.ModTime}, resp.StatusCode == http.StatusCreated, nil
}

// PutFile hashes the file at path (streaming), then Puts it under its digest (skipping
// the upload when the server has it). The Info names the digest.
func (c *Client) PutFile(ctx context.Context, path string, progress Progress) (info blob.Info, uploaded bool, err error) {
	d, size, err := blob.DigestFile(ctx, path)
	if err != nil {
		return blob.Info{}, false, err
	}
	f, err := os.Open(path)
	if err != nil {
		return blob.Info{}, false, fmt.Errorf("uploading %s: %w", path, err)
	}
	defer f.Close()
	info, uploaded, err = c.Put(ctx, d, f, size, progress)
	if err != nil {
		return blob.Info{}, false, fmt.Errorf("uploading %s: %w", path, err)
	}
	return info, uploaded, nil
}

// Get writes blob d from offset to its end into w (offset > 0 asks for a Range: a
// resumed download). With offset 0 it also verifies the digest of what it wrote (an
// error matching blob.ErrMismatch when it differs). progress (may be nil) is told the
// bytes of the whole blob done, counting offset.
func (c *Client) Get(ctx context.Context, d blob.Digest, w io.Writer, offset int64, progress Progress) (blob.Info, error) {
	op := "downloading " + string(d)
	if err := d.Validate(); err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	if offset < 0 {
		return blob.Info{}, fmt.Errorf("%s: %w: offset %d: want 0 or more", op, blob.ErrInvalid, offset)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.blobURL(d), nil)
	if err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.do(req, op, http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable)
	if err != nil {
		return blob.Info{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		// Asking from the very end of the blob (a download that had finished) is fine.
		var total int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes */%d", &total); err == nil && total == offset {
			if progress != nil {
				progress(offset, total)
			}
			return blob.Info{Digest: d, Size: total}, nil
		}
		return blob.Info{}, &Error{Op: op, Status: resp.StatusCode, Code: CodeInvalid,
			Message: fmt.Sprintf("offset %d is past the end of the blob (%s bytes): resume from at most its size", offset, strings.TrimPrefix(resp.Header.Get("Content-Range"), "bytes */"))}
	}
	info := infoFromHeader(d, resp)
	if resp.StatusCode == http.StatusPartialContent {
		info.Size = offset + resp.ContentLength
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			var s, e, total int64
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &s, &e, &total); err == nil {
				if s != offset {
					return blob.Info{}, fmt.Errorf("%s: the server sent bytes from %d, not %d", op, s, offset)
				}
				info.Size = total
			}
		}
	} else if offset > 0 {
		// The server ignored the Range: skip what the caller has.
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			return blob.Info{}, fmt.Errorf("%s: skipping to offset %d: %w", op, offset, err)
		}
	}
	var h *blob.Hasher
	dst := w
	if offset == 0 {
		h = blob.NewHasher()
		dst = io.MultiWriter(w, h)
	}
	var src io.Reader = resp.Body
	if progress != nil {
		progress(offset, info.Size)
		src = &progressReader{r: resp.Body, done: offset, total: info.Size, fn: progress}
	}
	n, err := blob.CopyContext(ctx, dst, src)
	if err != nil {
		return blob.Info{}, fmt.Errorf("%s: after %d bytes: %w (retry with offset %d to resume)", op, offset+n, err, offset+n)
	}
	if info.Size >= 0 && offset+n != info.Size {
		return blob.Info{}, fmt.Errorf("%s: %w: got %d bytes of %d (retry with offset %d to resume)", op, blob.ErrUnavailable, offset+n, info.Size, offset+n)
	}
	if h != nil {
		if err := h.Verify(d, -1); err != nil {
			return blob.Info{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	return info, nil
}

// GetFile downloads blob d into the file at path. A shorter file already there is taken
// as an interrupted download and resumed (Range); the whole file is then verified
// against d, and on a mismatch removed.
func (c *Client) GetFile(ctx context.Context, d blob.Digest, path string, progress Progress) (blob.Info, error) {
	op := fmt.Sprintf("downloading %s to %s", d, path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	h := blob.NewHasher()
	have, err := blob.CopyContext(ctx, h, f) // the part already there
	if err != nil {
		return blob.Info{}, fmt.Errorf("%s: reading what is there: %w", op, err)
	}
	info, err := c.Stat(ctx, d)
	if err != nil {
		return blob.Info{}, err
	}
	if have > info.Size {
		if err := f.Truncate(0); err != nil {
			return blob.Info{}, fmt.Errorf("%s: %w", op, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return blob.Info{}, fmt.Errorf("%s: %w", op, err)
		}
		h, have = blob.NewHasher(), 0
	}
	if have < info.Size || info.Size == 0 {
		if _, err := c.Get(ctx, d, io.MultiWriter(f, h), have, progress); err != nil {
			return blob.Info{}, err
		}
	} else if progress != nil {
		progress(have, info.Size)
	}
	if err := f.Sync(); err != nil {
		return blob.Info{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := h.Verify(d, info.Size); err != nil {
		f.Close()
		os.Remove(path)
		return blob.Info{}, fmt.Errorf("%s: the file was removed: %w", op, err)
	}
	return info, nil
}

// List returns up to limit blobs (limit <= 0: the server's default) after the digest
// after, sorted, and the digest to pass as after for the next page ("" at the end).
func (c *Client) List(ctx context.Context, after blob.Digest, limit int) ([]blob.Info, blob.Digest, error) {
	op := "listing blobs"
	q := url.Values{}
	if after != "" {
		q.Set("after", string(after))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	u := strings.TrimRight(c.BaseURL, "/") + Prefix
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.do(req, op, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var l listJSON
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, "", fmt.Errorf("%s: reading the server's answer: %w", op, err)
	}
	out := make([]blob.Info, 0, len(l.Blobs))
	for _, b := range l.Blobs {
		out = append(out, blob.Info{Digest: b.Digest, Size: b.Size, ModTime: b.ModTime})
	}
	return out, l.Next, nil
}

// Delete removes blob d from the server (an error matching blob.ErrNotFound when it
// was not there).
func (c *Client) Delete(ctx context.Context, d blob.Digest) error {
	op := "deleting " + string(d)
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.blobURL(d), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.do(req, op, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// progressReader reports the bytes read, at most every 100ms (and at the end).
type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    Progress
	last  time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if now := time.Now(); err != nil || now.Sub(p.last) >= 100*time.Millisecond || p.done == p.total {
		p.last = now
		p.fn(p.done, p.total)
	}
	return n, err
}
