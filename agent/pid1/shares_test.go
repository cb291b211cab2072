//go:build linux

package pid1

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/api/guestabi"
)

// fakeNineSys writes a sysfs tree with one virtio-9p device per tag, each mount_tag
// file holding the tag and a NUL as the kernel writes it.
func fakeNineSys(t *testing.T, tags ...string) string {
	t.Helper()
	sys := t.TempDir()
	for i, tag := range tags {
		dir := filepath.Join(sys, "bus/virtio/drivers/9pnet_virtio", "virtio"+string(rune('1'+i)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mount_tag"), []byte(tag+"\x00"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

func TestOfferedTags(t *testing.T) {
	cases := []struct {
		name string
		tags []string
		want []string
	}{
		{"none", nil, nil},
		{"both", []string{guestabi.OutTag, guestabi.InTag}, []string{guestabi.InTag, guestabi.OutTag}},
		{"other", []string{"elsewhere"}, []string{"elsewhere"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := OfferedTags(fakeNineSys(t, c.tags...))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("OfferedTags = %q, want %q", got, c.want)
			}
		})
	}
}

// TestMountSharesNothingOffered: without virtio-9p devices nothing is mounted, nothing
// is printed and there is no error (a guest started without shares).
func TestMountSharesNothingOffered(t *testing.T) {
	var log bytes.Buffer
	target := filepath.Join(t.TempDir(), "in")
	got, err := MountShares(fakeNineSys(t, "unrelated"), []Share{{Tag: guestabi.InTag, Target: target, ReadOnly: true}}, &log)
	if err != nil || len(got) != 0 || log.Len() != 0 {
		t.Fatalf("MountShares = %v, %v, log %q; want nothing mounted, no error, no log", got, err, log.String())
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("mount point %s was created for a share not offered (stat: %v)", target, err)
	}
}

// fakeMount records mount(2) calls and fails those whose target is in fail.
type fakeMount struct {
	calls []string
	fail  map[string]error
}

func (f *fakeMount) mount(source, target, fstype string, flags uintptr, data string) error {
	f.calls = append(f.calls, fmt.Sprintf("%s %s %s %#x %s", source, target, fstype, flags, data))
	return f.fail[target]
}

// TestMountSharesOffered: only offered shares are mounted, each once with its flags, the
// mount point is created, one line is logged per mount, and an existing mount (EBUSY)
// counts as mounted.
func TestMountSharesOffered(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "run/paddock/in"), filepath.Join(dir, "run/paddock/out")
	shares := []Share{{Tag: guestabi.InTag, Target: in, ReadOnly: true}, {Tag: guestabi.OutTag, Target: out}}
	fm := &fakeMount{fail: map[string]error{out: unix.EBUSY}}
	var log bytes.Buffer
	got, err := mountShares(fakeNineSys(t, guestabi.InTag, guestabi.OutTag, "other"), shares, &log, fm.mount)
	if err != nil || !reflect.DeepEqual(got, shares) {
		t.Fatalf("mountShares = %+v, %v; want both shares", got, err)
	}
	want := []string{
		fmt.Sprintf("%s %s 9p %#x %s", guestabi.InTag, in, uintptr(unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RDONLY), NinePOptions),
		fmt.Sprintf("%s %s 9p %#x %s", guestabi.OutTag, out, uintptr(unix.MS_NOSUID|unix.MS_NODEV), NinePOptions),
	}
	if !reflect.DeepEqual(fm.calls, want) {
		t.Fatalf("mount calls:\n%s\nwant:\n%s", strings.Join(fm.calls, "\n"), strings.Join(want, "\n"))
	}
	for _, d := range []string{in, out} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Errorf("mount point %s not created: %v", d, err)
		}
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "mounted 9p share "+guestabi.InTag+" on "+in+" (ro,") || !strings.Contains(lines[1], guestabi.OutTag+" on "+out+" (rw,") {
		t.Errorf("log = %q, want one line per mount", log.String())
	}
}

// TestMountSharesFailureNamesShare: an offered share that cannot be mounted is an
// error naming the tag, the target and the options; the shares mounted before it are
// returned.
func TestMountSharesFailureNamesShare(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	fm := &fakeMount{fail: map[string]error{out: unix.ENODEV}}
	got, err := mountShares(fakeNineSys(t, guestabi.InTag, guestabi.OutTag), []Share{{Tag: guestabi.InTag, Target: in, ReadOnly: true}, {Tag: guestabi.OutTag, Target: out}}, &bytes.Buffer{}, fm.mount)
	if err == nil || len(got) != 1 || !errors.Is(err, unix.ENODEV) {
		t.Fatalf("mountShares = %+v, %v; want the input share mounted and ENODEV", got, err)
	}
	for _, want := range []string{guestabi.OutTag, out, NinePOptions} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestMountArgs(t *testing.T) {
	for _, s := range DataShares {
		flags, data := MountArgs(s)
		if data != NinePOptions {
			t.Errorf("%s: data %q, want %q", s.Tag, data, NinePOptions)
		}
		if flags&unix.MS_NOSUID == 0 || flags&unix.MS_NODEV == 0 {
			t.Errorf("%s: flags %#x lack nosuid/nodev", s.Tag, flags)
		}
		if ro := flags&unix.MS_RDONLY != 0; ro != s.ReadOnly || ro != (s.Tag == guestabi.InTag) {
			t.Errorf("%s: read-only %v; the input share must be read-only, the output share writable", s.Tag, ro)
		}
	}
	if DataShares[0].Target != guestabi.InDir || DataShares[1].Target != guestabi.OutDir {
		t.Errorf("DataShares = %+v, want the guestabi mount points", DataShares)
	}
}
