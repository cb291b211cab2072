package hypervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd, disk := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd"), filepath.Join(dir, "disk.qcow2")
	for _, f := range []string{kernel, initrd, disk} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	valid := func() DomainSpec {
		return DomainSpec{
			Name: "paddock-a", VCPUs: 1, MemoryMiB: 256, Kernel: kernel, Initrd: initrd,
			Disks:       []Disk{{Path: disk, Format: "qcow2", Target: "vda"}},
			Filesystems: []Filesystem{{Source: dir, Tag: "paddock.in", ReadOnly: true}, {Source: dir, Tag: "paddock.out"}},
			Channels:    []Channel{{Name: "org.paddock.agent.0", SocketPath: filepath.Join(dir, "agent.sock")}},
			ConsoleLog:  filepath.Join(dir, "console.log"),
			Labels:      map[string]string{"pool": "a"},
		}
	}
	cases := []struct {
		name     string
		edit     func(*DomainSpec)
		field    string
		mentions string // the error must mention this (the offending value or the fix)
	}{
		{"valid", func(*DomainSpec) {}, "", ""},
		{"valid with network", func(s *DomainSpec) { s.Network = &Network{Network: "default"} }, "", ""},
		{"zero memory", func(s *DomainSpec) { s.MemoryMiB = 0 }, "memory", "MemoryMiB"},
		{"negative memory", func(s *DomainSpec) { s.MemoryMiB = -5 }, "memory", "-5"},
		{"tiny memory", func(s *DomainSpec) { s.MemoryMiB = 8 }, "memory", "32"},
		{"zero vcpus", func(s *DomainSpec) { s.VCPUs = 0 }, "vcpus", "VCPUs"},
		{"cpu shares too large", func(s *DomainSpec) { s.CPUShares = 1 << 20 }, "cpu_shares", "262144"},
		{"cpu shares 1", func(s *DomainSpec) { s.CPUShares = 1 }, "cpu_shares", "4096"},
		{"cpu shares set", func(s *DomainSpec) { s.CPUShares = 4096 }, "", ""},
		{"name without prefix", func(s *DomainSpec) { s.Name = "web-1" }, "name", `"paddock-"`},
		{"name only prefix", func(s *DomainSpec) { s.Name = "paddock-" }, "name", `"paddock-"`},
		{"name with slash", func(s *DomainSpec) { s.Name = "paddock-a/b" }, "name", "paddock-a/b"},
		{"name too long", func(s *DomainSpec) { s.Name = "paddock-" + strings.Repeat("x", 60) }, "name", "64"},
		{"missing kernel", func(s *DomainSpec) { s.Kernel = "/nonexistent/vmlinuz" }, "kernel", "/nonexistent/vmlinuz"},
		{"relative kernel", func(s *DomainSpec) { s.Kernel = "vmlinuz" }, "kernel", "absolute"},
		{"kernel is a directory", func(s *DomainSpec) { s.Kernel = dir }, "kernel", dir},
		{"missing initrd", func(s *DomainSpec) { s.Initrd = filepath.Join(dir, "nope") }, "initrd", "nope"},
		{"missing disk", func(s *DomainSpec) { s.Disks[0].Path = filepath.Join(dir, "gone.qcow2") }, "disks[0].path", "gone.qcow2"},
		{"bad disk format", func(s *DomainSpec) { s.Disks[0].Format = "vmdk" }, "disks[0].format", "qcow2"},
		{"bad disk target", func(s *DomainSpec) { s.Disks[0].Target = "sda" }, "disks[0].target", "vda"},
		{"duplicate disk target", func(s *DomainSpec) {
			s.Disks = append(s.Disks, Disk{Path: disk, Format: "raw", Target: "vda"})
		}, "disks[1].target", "disks[0]"},
		{"shared read-only disk with serial", func(s *DomainSpec) {
			s.Disks = append(s.Disks, Disk{Path: disk, Format: "raw", Target: "vdb", ReadOnly: true, Shareable: true, Serial: "paddock-handlers"})
		}, "", ""},
		{"shareable writable disk", func(s *DomainSpec) { s.Disks[0].Shareable = true }, "disks[0].shareable", "read-only"},
		{"serial too long", func(s *DomainSpec) { s.Disks[0].Serial = strings.Repeat("s", 21) }, "disks[0].serial", "20"},
		{"serial with space", func(s *DomainSpec) { s.Disks[0].Serial = "a b" }, "disks[0].serial", `"a b"`},
		{"relative share", func(s *DomainSpec) { s.Filesystems[0].Source = "in" }, "filesystems[0].source", "absolute"},
		{"unclean share", func(s *DomainSpec) { s.Filesystems[1].Source = dir + "/../" + filepath.Base(dir) }, "filesystems[1].source", "clean"},
		{"missing share", func(s *DomainSpec) { s.Filesystems[0].Source = filepath.Join(dir, "gone") }, "filesystems[0].source", "create the directory"},
		{"share is a file", func(s *DomainSpec) { s.Filesystems[0].Source = disk }, "filesystems[0].source", "not a directory"},
		{"empty tag", func(s *DomainSpec) { s.Filesystems[0].Tag = "" }, "filesystems[0].tag", "paddock.in"},
		{"tag with space", func(s *DomainSpec) { s.Filesystems[0].Tag = "paddock in" }, "filesystems[0].tag", "paddock in"},
		{"tag too long", func(s *DomainSpec) { s.Filesystems[0].Tag = strings.Repeat("t", 32) }, "filesystems[0].tag", "1-31"},
		{"duplicate tag", func(s *DomainSpec) { s.Filesystems[1].Tag = "paddock.in" }, "filesystems[1].tag", "filesystems[0]"},
		{"bad channel name", func(s *DomainSpec) { s.Channels[0].Name = "org paddock" }, "channels[0].name", "org.paddock.agent.0"},
		{"duplicate channel name", func(s *DomainSpec) {
			s.Channels = append(s.Channels, Channel{Name: "org.paddock.agent.0", SocketPath: filepath.Join(dir, "b.sock")})
		}, "channels[1].name", "channels[0]"},
		{"relative socket", func(s *DomainSpec) { s.Channels[0].SocketPath = "agent.sock" }, "channels[0].socket_path", "absolute"},
		{"socket dir missing", func(s *DomainSpec) { s.Channels[0].SocketPath = "/nonexistent/dir/agent.sock" }, "channels[0].socket_path", "/nonexistent/dir"},
		{"socket path too long", func(s *DomainSpec) { s.Channels[0].SocketPath = "/" + strings.Repeat("s", 120) }, "channels[0].socket_path", "107"},
		{"duplicate socket", func(s *DomainSpec) {
			s.Channels = append(s.Channels, Channel{Name: "org.paddock.agent.1", SocketPath: s.Channels[0].SocketPath})
		}, "channels[1].socket_path", "channels[0]"},
		{"console log dir missing", func(s *DomainSpec) { s.ConsoleLog = "/nonexistent/console.log" }, "console_log", "/nonexistent"},
		{"network and bridge", func(s *DomainSpec) { s.Network = &Network{Network: "default", Bridge: "br0"} }, "network", "exactly one"},
		{"empty network", func(s *DomainSpec) { s.Network = &Network{} }, "network", "exactly one"},
		{"bad mac", func(s *DomainSpec) { s.Network = &Network{Bridge: "br0", MAC: "zz"} }, "network.mac", "zz"},
		{"bad label key", func(s *DomainSpec) { s.Labels = map[string]string{"Bad Key": "x"} }, "labels", "Bad Key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := valid()
			c.edit(&s)
			err := s.Validate(DefaultPrefix)
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want a *FieldError", err)
			}
			if fe.Field != c.field || fe.Fix == "" {
				t.Fatalf("Validate = %#v, want field %s with a fix", fe, c.field)
			}
			if !strings.Contains(err.Error(), c.mentions) {
				t.Errorf("error %q does not mention %q", err, c.mentions)
			}
		})
	}
}
