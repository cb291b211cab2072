package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobtest"
	"github.com/paddockvm/paddock/blob/s3store"
)

// partCopyShim adds UploadPartCopy, which gofakes3 lacks, in front of it: a part PUT with
// x-amz-copy-source becomes an ordinary part upload of that range of the source, and its
// answer a CopyPartResult, as S3 gives.
func partCopyShim(f *fake, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := r.Header.Get("X-Amz-Copy-Source")
		if r.Method != http.MethodPut || r.URL.Query().Get("uploadId") == "" || src == "" {
			next.ServeHTTP(w, r)
			return
		}
		src, _ = url.PathUnescape(strings.TrimPrefix(src, "/"))
		bucket, key, _ := strings.Cut(src, "/")
		var a, b int64
		if _, err := fmt.Sscanf(r.Header.Get("X-Amz-Copy-Source-Range"), "bytes=%d-%d", &a, &b); err != nil {
			http.Error(w, "bad x-amz-copy-source-range", http.StatusBadRequest)
			return
		}
		obj, err := f.backend.GetObject(bucket, key, &gofakes3.ObjectRangeRequest{Start: a, End: b})
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		data, _ := io.ReadAll(obj.Contents)
		obj.Contents.Close()
		r2 := r.Clone(r.Context())
		r2.Header.Del("X-Amz-Copy-Source")
		r2.Header.Del("X-Amz-Copy-Source-Range")
		r2.Header.Set("Content-Length", fmt.Sprint(len(data)))
		r2.ContentLength = int64(len(data))
		r2.Body = io.NopCloser(bytes.NewReader(data))
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r2)
		if rec.Code != http.StatusOK {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><CopyPartResult><ETag>%s</ETag><LastModified>%s</LastModified></CopyPartResult>`,
			rec.Header().Get("ETag"), time.Now().UTC().Format(time.RFC3339))
	})
}

// TestMultipartCopy takes the path for blobs over 5 GiB (a server-side multipart copy
// with UploadPartCopy) with a 12 MiB blob, limits lowered.
func TestMultipartCopy(t *testing.T) {
	defer s3store.SetCopyLimits(8<<20, 5<<20)()
	f := newFakeWrapped(t, partCopyShim)
	ctx := context.Background()
	s, err := s3store.New(ctx, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := blobtest.Data(77, 12<<20+3) // parts of 5, 5 and 2 MiB
	d := blob.FromBytes(data)
	if _, err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(ctx, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v); want the %d put", len(got), err, len(data))
	}
	if k := f.keys(t, "blobs/"); len(k) != 1 {
		t.Fatalf("objects after the copy: %v; want only the blob", k)
	}
}

// TestCopyUnsupported: a server that does not do UploadPartCopy (plain gofakes3 takes
// the part as an empty upload) gives an error, and no wrong blob is left visible.
func TestCopyUnsupported(t *testing.T) {
	defer s3store.SetCopyLimits(8<<20, 5<<20)()
	f := newFake(t)
	ctx := context.Background()
	s, err := s3store.New(ctx, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := blobtest.Data(78, 12<<20)
	d := blob.FromBytes(data)
	if _, err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err == nil {
		t.Fatal("Put through a server without UploadPartCopy succeeded")
	} else {
		t.Log(err)
	}
	if k := f.keys(t, "blobs/"); len(k) != 0 {
		t.Fatalf("objects left: %v", k)
	}
}
