package transport

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// FuzzFrameReader feeds the frame decoder arbitrary bytes, with a valid frame
// spliced after them. The decoder must never panic, every frame it returns must be
// one that encodes to exactly the bytes it consumed (valid header, CRCs, length),
// it must account for every byte (frames plus skipped equals the input), and the
// valid frame after the garbage must be found, because padding flushes any
// half-frame the garbage left.
//
//	go test -run XXX -fuzz FuzzFrameReader -fuzztime 10m ./agent/transport
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte("PADDOCK-AGENT READY version=dev\n"))
	f.Add(append([]byte{}, magic[:]...))
	f.Add(appendFrame(nil, frame{typ: frameHello, session: 1, payload: []byte("guest")}))
	f.Add(appendFrame(nil, frame{typ: frameData, session: 2, seq: 9, payload: bytes.Repeat([]byte{0xf1}, 100)})[:40])
	f.Add(appendFrame(nil, frame{typ: frameResync})[:31])
	f.Fuzz(func(t *testing.T, garbage []byte) {
		want := frame{typ: frameData, session: 0xfeedface, seq: 7, payload: []byte("the frame after the garbage")}
		in := append(append(append([]byte{}, garbage...), padding...), appendFrame(nil, want)...)
		fr := newFrameReader(bytes.NewReader(in))
		var consumed int64
		found := false
		for {
			got, err := fr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("decoder error %v", err)
			}
			if got.typ < frameHello || got.typ > frameResync || len(got.payload) > MaxPayload {
				t.Fatalf("decoder returned an invalid frame %+v", got)
			}
			consumed += int64(len(appendFrame(nil, got)))
			if got.typ == want.typ && got.session == want.session && got.seq == want.seq && bytes.Equal(got.payload, want.payload) {
				found = true
			}
		}
		if consumed+fr.skipped != int64(len(in)) {
			t.Fatalf("frames %d + skipped %d bytes != input %d bytes", consumed, fr.skipped, len(in))
		}
		if !found {
			t.Fatalf("the valid frame after %d bytes of garbage and padding was not found", len(garbage))
		}
	})
}

// FuzzHostStream runs the host half of the protocol on arbitrary bytes from a
// guest: it must neither panic nor hang, whatever the guest sends.
func FuzzHostStream(f *testing.F) {
	f.Add(appendFrame(appendFrame(nil, frame{typ: frameHello, session: 5, payload: []byte("g")}), frame{typ: frameData, session: 5, payload: []byte("hi")}))
	f.Add(appendFrame(nil, frame{typ: frameClose, session: 5}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h := NewHost(nopCloser{bytes.NewReader(in)}, Options{Logger: quiet, Window: 64 << 10, StallTimeout: 50 * time.Millisecond, MaxSessions: 4})
		select {
		case <-h.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the host did not finish reading a finite stream")
		}
		h.Close()
	})
}

type nopCloser struct{ io.Reader }

func (nopCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopCloser) Close() error                { return nil }
