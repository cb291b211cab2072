package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
)

// Frame layout (big endian), headerLen bytes then the payload:
//
//	0  magic "PDK\xf1"   4
//	4  type              1
//	5  flags (0)         1
//	6  reserved (0)      2
//	8  session id        8
//	16 sequence number   4   (DATA: per session and direction, from 0)
//	20 payload length    4   (<= MaxPayload)
//	24 crc32c(payload)   4
//	28 crc32c(bytes 0:28) 4
const (
	headerLen = 32
	// MaxPayload is the largest payload of one frame; writes are split.
	MaxPayload = 16 << 10
)

var magic = [4]byte{'P', 'D', 'K', 0xf1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type frameType uint8

const (
	frameHello  frameType = 1 // guest → host: start session (payload: guest's name)
	frameAck    frameType = 2 // host → guest: session accepted
	frameData   frameType = 3 // both: session bytes
	frameClose  frameType = 4 // both: session ended
	frameResync frameType = 5 // host → guest: host (re)connected, start a new session
)

func (t frameType) String() string {
	switch t {
	case frameHello:
		return "HELLO"
	case frameAck:
		return "ACK"
	case frameData:
		return "DATA"
	case frameClose:
		return "CLOSE"
	case frameResync:
		return "RESYNC"
	}
	return "?"
}

type frame struct {
	typ     frameType
	session uint64
	seq     uint32
	payload []byte
}

func appendFrame(dst []byte, f frame) []byte {
	var h [headerLen]byte
	copy(h[0:4], magic[:])
	h[4] = byte(f.typ)
	binary.BigEndian.PutUint64(h[8:16], f.session)
	binary.BigEndian.PutUint32(h[16:20], f.seq)
	binary.BigEndian.PutUint32(h[20:24], uint32(len(f.payload)))
	binary.BigEndian.PutUint32(h[24:28], crc32.Checksum(f.payload, castagnoli))
	binary.BigEndian.PutUint32(h[28:32], crc32.Checksum(h[0:28], castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, f.payload...)
}

// frameReader finds frames in a byte stream, skipping anything that is not a
// valid frame.
type frameReader struct {
	br      *bufio.Reader
	skipped int64 // bytes skipped as garbage so far
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, headerLen+MaxPayload+4096)}
}

// next returns the next valid frame; errors are the underlying reader's.
func (fr *frameReader) next() (frame, error) {
	for {
		b, err := fr.br.Peek(4)
		if err != nil {
			return frame{}, err
		}
		if !bytes.Equal(b, magic[:]) {
			buf, _ := fr.br.Peek(fr.br.Buffered())
			n := len(buf)
			if i := bytes.IndexByte(buf[1:], magic[0]); i >= 0 {
				n = i + 1
			}
			fr.br.Discard(n)
			fr.skipped += int64(n)
			continue
		}
		h, err := fr.br.Peek(headerLen)
		if err != nil {
			return frame{}, err
		}
		typ := frameType(h[4])
		length := binary.BigEndian.Uint32(h[20:24])
		if crc32.Checksum(h[0:28], castagnoli) != binary.BigEndian.Uint32(h[28:32]) ||
			typ < frameHello || typ > frameResync || length > MaxPayload {
			fr.br.Discard(1)
			fr.skipped++
			continue
		}
		// Read every header field now: the next Peek may move the buffer.
		session := binary.BigEndian.Uint64(h[8:16])
		seq := binary.BigEndian.Uint32(h[16:20])
		payloadCRC := binary.BigEndian.Uint32(h[24:28])
		all, err := fr.br.Peek(headerLen + int(length))
		if err != nil {
			return frame{}, err
		}
		p := all[headerLen:]
		if crc32.Checksum(p, castagnoli) != payloadCRC {
			fr.br.Discard(1)
			fr.skipped++
			continue
		}
		f := frame{
			typ:     typ,
			session: session,
			seq:     seq,
			payload: append([]byte(nil), p...),
		}
		fr.br.Discard(headerLen + int(length))
		return f, nil
	}
}

// padding is written before a RESYNC or the first HELLO: zeros enough to
// complete any half-received frame at the other end, so the frame after it is
// read from its first byte.
var padding = make([]byte, headerLen+MaxPayload)
