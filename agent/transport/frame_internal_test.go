package transport

import (
	"bytes"
	"io"
	"testing"
)

func TestFrameReaderSkipsGarbage(t *testing.T) {
	a := frame{typ: frameData, session: 7, seq: 0, payload: []byte("first")}
	b := frame{typ: frameHello, session: 9, payload: []byte("guest")}
	badCRC := appendFrame(nil, frame{typ: frameData, session: 7, seq: 1, payload: []byte("corrupted")})
	badCRC[len(badCRC)-1] ^= 0xff // payload no longer matches its crc
	var s []byte
	s = append(s, "PADDOCK-AGENT READY version=dev\n"...)
	s = append(s, magic[:]...) // a lone magic
	s = append(s, "PDK"...)
	s = appendFrame(s, a)
	s = append(s, badCRC...)
	s = append(s, appendFrame(nil, b)[:20]...) // a truncated frame...
	s = append(s, padding...)                  // ...flushed by padding
	s = appendFrame(s, b)
	fr := newFrameReader(bytes.NewReader(s))
	for i, want := range []frame{a, b} {
		got, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.typ != want.typ || got.session != want.session || got.seq != want.seq || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("frame %d = %+v, want %+v", i, got, want)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
	if want := int64(len(s)) - int64(len(appendFrame(nil, a))+len(appendFrame(nil, b))); fr.skipped != want {
		t.Fatalf("skipped %d bytes, want %d", fr.skipped, want)
	}
}

func TestFrameRoundTripSizes(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload - 1, MaxPayload} {
		p := bytes.Repeat([]byte{0xab}, n)
		fr := newFrameReader(bytes.NewReader(appendFrame(nil, frame{typ: frameData, session: 1, seq: 3, payload: p})))
		f, err := fr.next()
		if err != nil || !bytes.Equal(f.payload, p) || f.seq != 3 {
			t.Fatalf("payload of %d bytes: %v", n, err)
		}
	}
}
