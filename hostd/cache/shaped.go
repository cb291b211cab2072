package cache

import (
	"context"
	"io"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/hostd/bwshare"
)

// Shaped wraps a Source and a Sink so that every fetch and upload is a transfer of the
// Shaper, in the bandwidth class its context carries (bwshare.WithClass; none:
// bwshare.DefaultClass). A fetch runs in the class of the Link call that started it
// (the first of concurrent Links of one blob); an async upload, which Run makes long
// after the task, in bwshare.DefaultClass.
func Shaped(src Source, sink Sink, sh *bwshare.Shaper) (Source, Sink) {
	return shapedSource{src, sh}, shapedSink{sink, sh}
}

type shapedSource struct {
	Source
	sh *bwshare.Shaper
}

func (s shapedSource) usesPeers() bool { return usesPeers(s.Source) }

// Open opens the blob in the inner Source and shapes its bytes.
func (s shapedSource) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	rc, err := s.Source.Open(ctx, d, offset)
	if err != nil {
		return nil, err
	}
	return s.sh.Reader(ctx, bwshare.ClassOf(ctx), rc), nil
}

type shapedSink struct {
	Sink
	sh *bwshare.Shaper
}

// Put uploads through the inner Sink with r shaped.
func (s shapedSink) Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) error {
	sr := s.sh.Reader(ctx, bwshare.ClassOf(ctx), io.NopCloser(r))
	defer sr.Close()
	return s.Sink.Put(ctx, d, size, sr)
}
