package agent

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestIdentityRoundTrip(t *testing.T) {
	a, err := NewIdentity("paddock-web-0a1b2c3d")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewIdentity("paddock-web-0a1b2c3d")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Seed, b.Seed) || len(a.Seed) != IdentitySeedBytes {
		t.Fatalf("seeds %x and %x: want two different %d-byte seeds", a.Seed, b.Seed, IdentitySeedBytes)
	}
	got, err := ParseIdentity(a.Line())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != a.ID || !bytes.Equal(got.Seed, a.Seed) {
		t.Errorf("parsed %+v from %q", got, a.Line())
	}
}

func TestParseIdentityRejects(t *testing.T) {
	seed := strings.Repeat("ab", IdentitySeedBytes)
	for _, line := range []string{
		"",
		"PADDOCK-IDENTITY id=x",
		"PADDOCK-IDENTITY id=x seed=" + seed[:10],
		"PADDOCK-IDENTITY id=x seed=" + seed + "00",
		"PADDOCK-IDENTITY id=-bad seed=" + seed,
		"PADDOCK-IDENTITY id=a/b seed=" + seed,
		"PADDOCK-IDENTITY id=x seed=" + strings.ToUpper(seed),
	} {
		if id, err := ParseIdentity(line); err == nil {
			t.Errorf("ParseIdentity(%q) = %+v, want an error", line, id)
		}
	}
	if _, err := NewIdentity("bad id"); err == nil {
		t.Error("NewIdentity accepted an id with a space")
	}
}

// eofThen reads EOF a few times (no host connected) before the real data.
type eofThen struct {
	eofs int
	r    io.Reader
}

func (e *eofThen) Read(p []byte) (int, error) {
	if e.eofs > 0 {
		e.eofs--
		return 0, io.EOF
	}
	return e.r.Read(p)
}

func TestReadIdentity(t *testing.T) {
	id, _ := NewIdentity("paddock-web-0a1b2c3d")
	rest := "\x00RESYNC"
	r := &eofThen{eofs: 3, r: strings.NewReader("stale line\n" + id.Line() + rest)}
	got, err := ReadIdentity(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id.ID {
		t.Errorf("id %q, want %q", got.ID, id.ID)
	}
	left, _ := io.ReadAll(r.r)
	if string(left) != rest {
		t.Errorf("ReadIdentity consumed past its line: left %q", left)
	}

	if _, err := ReadIdentity(context.Background(), strings.NewReader(strings.Repeat("x", MaxIdentityLine+1))); err == nil {
		t.Error("an endless line was accepted")
	}
	if _, err := ReadIdentity(context.Background(), strings.NewReader("PADDOCK-IDENTITY id=x seed=zz\n")); err == nil {
		t.Error("a malformed identity line was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ReadIdentity(ctx, &eofThen{eofs: 1 << 30}); err == nil {
		t.Error("ReadIdentity did not give up when ctx ended")
	}
}
