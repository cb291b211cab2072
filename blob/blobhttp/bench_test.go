package blobhttp_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/blob/blobtest"
)

const benchSize = 64 << 20

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// BenchmarkHTTPPut uploads a 64 MiB blob with Client.Put to the API over an FS store
// (real HTTP on loopback), and in the same iterations measures two baselines with the
// same stream: io.Copy into a file (+ fsync), and a plain HTTP PUT whose handler
// io.Copies the body into a file (+ fsync). Metrics: raw-MB/s, rawhttp-MB/s, api-MB/s,
// api/raw and api/rawhttp.
//
//	go test -run '^$' -bench HTTPPut -benchtime 5x ./blob/blobhttp/
func BenchmarkHTTPPut(b *testing.B) {
	dir := b.TempDir()
	st, err := blob.OpenFS(dir + "/store")
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	h := blobhttp.NewHandler(st, blobhttp.Options{})
	mux.Handle(blobhttp.Prefix+"/", h)
	mux.HandleFunc("/raw", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.CreateTemp(dir, "rawhttp")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := io.Copy(f, r.Body); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		f.Sync()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := &blobhttp.Client{BaseURL: srv.URL, HTTP: srv.Client()}
	d := blobtest.StreamDigest(b, 2, benchSize)
	ctx := context.Background()

	var raw, rawHTTP, api time.Duration
	for b.Loop() {
		t0 := time.Now()
		f, err := os.CreateTemp(dir, "raw")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(f, blobtest.NewStream(2, benchSize))
		f.Sync()
		f.Close()
		os.Remove(f.Name())
		t1 := time.Now()
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/raw", blobtest.NewStream(2, benchSize))
		req.ContentLength = benchSize
		resp, err := srv.Client().Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err, resp)
		}
		resp.Body.Close()
		t2 := time.Now()
		if _, up, err := c.Put(ctx, d, blobtest.NewStream(2, benchSize), benchSize, nil); err != nil || !up {
			b.Fatal(err)
		}
		t3 := time.Now()
		raw, rawHTTP, api = raw+t1.Sub(t0), rawHTTP+t2.Sub(t1), api+t3.Sub(t2)
		b.StopTimer()
		if err := st.Delete(ctx, d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := int64(b.N) * benchSize
	b.ReportMetric(mbps(n, raw), "raw-MB/s")
	b.ReportMetric(mbps(n, rawHTTP), "rawhttp-MB/s")
	b.ReportMetric(mbps(n, api), "api-MB/s")
	b.ReportMetric(raw.Seconds()/api.Seconds(), "api/raw")
	b.ReportMetric(rawHTTP.Seconds()/api.Seconds(), "api/rawhttp")
}
