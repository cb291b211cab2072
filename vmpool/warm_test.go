package vmpool

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent"
)

func writeSnapshot(t *testing.T, dir string, m snapshotManifest, state []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), state, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, manifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadSnapshot: a snapshot on disk is used only when its manifest matches the
// pool's image, configuration, QEMU, libvirt and state format, and its state file has
// the recorded size and checksum; each mismatch is reported with its reason.
func TestLoadSnapshot(t *testing.T) {
	state := []byte(strings.Repeat("QEVM state ", 1000))
	sum := sha256.Sum256(state)
	want := snapshotManifest{Format: "qemu-migration-fd/1", Image: "sha256:aaaa", ConfigHash: "c1", QEMU: "QEMU 7.2.0", Libvirt: "9.0.0"}
	good := want
	good.StateSize, good.StateSHA = int64(len(state)), hex.EncodeToString(sum[:])
	tests := []struct {
		name   string
		edit   func(m *snapshotManifest, state []byte) []byte
		reason string // "" = usable
	}{
		{"matches", func(*snapshotManifest, []byte) []byte { return state }, ""},
		{"older image", func(m *snapshotManifest, s []byte) []byte { m.Image = "sha256:bbbb"; return s }, "made from image"},
		{"pool configuration changed", func(m *snapshotManifest, s []byte) []byte { m.ConfigHash = "c0"; return s }, "configuration changed"},
		{"other QEMU", func(m *snapshotManifest, s []byte) []byte { m.QEMU = "QEMU 7.1.0"; return s }, "made by QEMU 7.1.0"},
		{"other libvirt", func(m *snapshotManifest, s []byte) []byte { m.Libvirt = "8.0.0"; return s }, "libvirt"},
		{"other state format", func(m *snapshotManifest, s []byte) []byte { m.Format = "libvirt-save/1"; return s }, "state format"},
		{"truncated", func(_ *snapshotManifest, s []byte) []byte { return s[:len(s)/2] }, "truncated"},
		{"corrupt", func(_ *snapshotManifest, s []byte) []byte {
			c := append([]byte(nil), s...)
			c[100] ^= 0xff
			return c
		}, "corrupt"},
		{"template disk missing", func(m *snapshotManifest, s []byte) []byte { m.Disk = "scratch-gone.qcow2"; return s }, "template disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pool")
			m := good
			s := tt.edit(&m, state)
			writeSnapshot(t, dir, m, s)
			snap, why := loadSnapshot(dir, want)
			if tt.reason == "" {
				if snap == nil {
					t.Fatalf("not usable: %s", why)
				}
				return
			}
			if snap != nil {
				t.Fatalf("usable, want refused with %q", tt.reason)
			}
			if !strings.Contains(why, tt.reason) {
				t.Errorf("reason %q lacks %q", why, tt.reason)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		if snap, why := loadSnapshot(filepath.Join(t.TempDir(), "absent"), want); snap != nil || why != "" {
			t.Errorf("empty directory: %v %q", snap, why)
		}
	})
	t.Run("unreadable manifest", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, manifestFile), []byte("{"), 0o644)
		if snap, why := loadSnapshot(dir, want); snap != nil || !strings.Contains(why, "manifest") {
			t.Errorf("broken manifest: %v %q", snap, why)
		}
	})
}

// TestSocketConnectorHandsIdentity: WaitReadyAs sends the identity line first, skips a
// ready line without an id (the template's), returns at the one naming the identity,
// and refuses one naming another id.
func TestSocketConnectorHandsIdentity(t *testing.T) {
	for _, tt := range []struct {
		name    string
		answer  string
		wantErr string
	}{
		{"own id", "PADDOCK-AGENT READY version=v1 boot_ms=5\nPADDOCK-AGENT READY version=v1 boot_ms=9 id=%s nonce=00ff\n", ""},
		{"other id", "PADDOCK-AGENT READY version=v1 boot_ms=9 id=paddock-other nonce=00ff\n", "instead of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "pdid-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			sock := filepath.Join(dir, "s")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			id, err := agent.NewIdentity("paddock-p-12345678")
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan agent.Identity, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				parsed, err := agent.ParseIdentity(line)
				if err != nil {
					t.Errorf("guest side: %v", err)
				}
				got <- parsed
				ans := tt.answer
				if strings.Contains(ans, "%s") {
					ans = strings.ReplaceAll(ans, "%s", parsed.ID)
				}
				c.Write([]byte(ans))
				time.Sleep(time.Second)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, info, err := SocketConnector{}.WaitReadyAs(ctx, GuestRef{Name: "paddock-p-12345678", Socket: sock}, id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if p := <-got; p.ID != id.ID || hex.EncodeToString(p.Seed) != hex.EncodeToString(id.Seed) {
				t.Errorf("guest got %+v, host sent %+v", p, id)
			}
			if info.ID != id.ID || info.Nonce != "00ff" || info.BootMS != 9 {
				t.Errorf("ready info %+v", info)
			}
		})
	}
}
