package runner

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func zst(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// corrupt flips a bit of b's last byte (a zstd frame's checksum).
func corrupt(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 1
	return b
}

func TestUnpack(t *testing.T) {
	content := []byte("#!/bin/sh\necho handler\n")
	tests := []struct {
		name       string
		packed     []byte // nil: no packed file
		existing   []byte // nil: no unpacked file yet
		want       []byte
		wantErr    bool
		wantPacked bool // the packed file is still there afterwards
	}{
		{name: "first start unpacks and removes the packed copy", packed: gz(t, content), want: content},
		{name: "zstd", packed: zst(t, content), want: content},
		{name: "zstd truncated", packed: zst(t, content)[:10], wantErr: true, wantPacked: true},
		{name: "zstd corrupt", packed: corrupt(zst(t, content)), wantErr: true, wantPacked: true},
		{name: "neither zstd nor gzip", packed: []byte{0x28, 0xb5, 0, 0, 1, 2}, wantErr: true, wantPacked: true},
		{name: "already unpacked: left alone", packed: gz(t, []byte("other")), existing: content, want: content, wantPacked: true},
		{name: "unpacked earlier, packed copy gone", existing: content, want: content},
		{name: "not gzip", packed: []byte("not gzip at all"), wantErr: true, wantPacked: true},
		{name: "truncated", packed: gz(t, content)[:20], wantErr: true, wantPacked: true},
		{name: "missing", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, packed := filepath.Join(dir, "h"), filepath.Join(dir, "h.gz")
			if tc.packed != nil {
				if err := os.WriteFile(packed, tc.packed, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.existing != nil {
				if err := os.WriteFile(path, tc.existing, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			sum, checked, err := unpack(packed, path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("unpack: err %v, want error %v", err, tc.wantErr)
			}
			if wantChecked := !tc.wantErr && tc.existing == nil && bytes.HasPrefix(tc.packed, zstdMagic); checked != wantChecked {
				t.Errorf("checked %v, want %v (a zstd frame with a checksum, unpacked now)", checked, wantChecked)
			}
			if checked && sum != nil {
				t.Errorf("a checked zstd frame was hashed too")
			}
			if want := sha256.Sum256(tc.want); sum != nil && !bytes.Equal(sum, want[:]) {
				t.Errorf("unpack's sha256 %x, want that of what it wrote, %x", sum, want)
			}
			if sum != nil && tc.existing != nil {
				t.Errorf("unpack hashed a binary it did not write")
			}
			if _, serr := os.Stat(packed); (serr == nil) != tc.wantPacked {
				t.Errorf("packed file present: %v, want %v", serr == nil, tc.wantPacked)
			}
			if _, serr := os.Stat(path + ".unpacking"); serr == nil {
				t.Errorf("%s.unpacking left behind", path)
			}
			if tc.wantErr {
				if _, serr := os.Stat(path); serr == nil {
					t.Errorf("a failed unpack left %s", path)
				}
				return
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("unpacked %q, want %q", got, tc.want)
			}
			if st, _ := os.Stat(path); st.Mode().Perm()&0o100 == 0 {
				t.Errorf("unpacked binary mode %v is not executable", st.Mode())
			}
		})
	}
}
