package hypervisor

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/internal/testutil"
	"libvirt.org/go/libvirtxml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenSpecs are rendered to testdata/<name>.xml. Paths need not exist: XML rendering
// does not check files (Validate does).
var goldenSpecs = []struct {
	name    string
	domType string
	spec    DomainSpec
}{
	{"minimal-tcg", "qemu", DomainSpec{
		Name: "paddock-minimal", VCPUs: 1, MemoryMiB: 256,
		Kernel: "/boot/vmlinuz-6.1.0-56-amd64", Initrd: "/var/lib/paddock/images/abc/initrd.cpio.zst",
		Cmdline: "console=ttyS0 quiet panic=-1",
	}},
	{"agent-tcg", "qemu", DomainSpec{
		Name: "paddock-pool-a-1", VCPUs: 2, MemoryMiB: 512,
		Kernel: "/boot/vmlinuz-6.1.0-56-amd64", Initrd: "/var/lib/paddock/images/abc/initrd.cpio.zst",
		Cmdline: "console=ttyS0 quiet panic=-1",
		Disks:   []Disk{{Path: "/var/lib/paddock/vms/paddock-pool-a-1/scratch.qcow2", Format: "qcow2", Target: "vda"}, {Path: "/var/lib/paddock/images/abc/handlers.erofs", Format: "raw", Target: "vdb", ReadOnly: true, Shareable: true, Serial: "paddock-handlers"}},
		Filesystems: []Filesystem{
			{Source: "/var/lib/paddock/vms/paddock-pool-a-1/in", Tag: "paddock.in", ReadOnly: true},
			{Source: "/var/lib/paddock/vms/paddock-pool-a-1/out", Tag: "paddock.out"},
		},
		Channels:   []Channel{{Name: "org.paddock.agent.0", SocketPath: "/run/paddock/vms/paddock-pool-a-1/agent.sock"}},
		ConsoleLog: "/var/log/paddock/vms/paddock-pool-a-1.console.log",
		Labels:     map[string]string{"pool": "pool-a", "image": "sha256:abc<&>\""},
		TBCacheMiB: 16,
	}},
	{"network-kvm", "kvm", DomainSpec{
		Name: "paddock-fullos", VCPUs: 4, MemoryMiB: 2048,
		Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd.img", Cmdline: "console=ttyS0 root=/dev/vda",
		Disks:      []Disk{{Path: "/var/lib/paddock/vms/fullos/root.qcow2", Format: "qcow2", Target: "vda"}},
		Network:    &Network{Network: "default", MAC: "52:54:00:12:34:56"},
		TBCacheMiB: 16, // ignored under KVM
	}},
	{"online-tcg", "qemu", DomainSpec{ // a guest of an online pool: a larger CPU share
		Name: "paddock-online-1", VCPUs: 1, MemoryMiB: 256,
		Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd.img",
		CPUShares: 4096,
	}},
	{"bridge-tcg", "qemu", DomainSpec{
		Name: "paddock-bridged", VCPUs: 1, MemoryMiB: 256,
		Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd.img",
		Network: &Network{Bridge: "br0"},
	}},
}

func TestGoldenXML(t *testing.T) {
	for _, g := range goldenSpecs {
		t.Run(g.name, func(t *testing.T) {
			got, err := g.spec.domainXML(g.domType)
			if err != nil {
				t.Fatalf("domainXML: %v", err)
			}
			got += "\n"
			path := filepath.Join("testdata", g.name+".xml")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (create it with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("XML differs from %s (run `go test ./hypervisor/ -run TestGoldenXML -update` if intended)\n--- got\n%s\n--- want\n%s", path, got, want)
			}
			validateXML(t, got)
			checkRoundTrip(t, g.spec, g.domType, got)
		})
	}
}

// validateXML runs libvirt's own validator on doc.
func validateXML(t *testing.T, doc string) {
	t.Helper()
	bin, err := exec.LookPath("virt-xml-validate")
	if err != nil {
		testutil.Skip(t, "virt-xml-validate not found", "run `make setup` (installs libvirt-clients)")
	}
	if _, err := exec.LookPath("xmllint"); err != nil {
		testutil.Skip(t, "xmllint (used by virt-xml-validate) not found", "run `make setup` (installs libxml2-utils)")
	}
	f := filepath.Join(t.TempDir(), "domain.xml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, f, "domain").CombinedOutput(); err != nil {
		t.Fatalf("virt-xml-validate rejects the generated XML: %v\n%s\n%s", err, out, doc)
	}
}

// checkRoundTrip parses the XML back and checks what matters to a guest.
func checkRoundTrip(t *testing.T, s DomainSpec, domType, doc string) {
	t.Helper()
	var d libvirtxml.Domain
	if err := d.Unmarshal(doc); err != nil {
		t.Fatalf("parsing generated XML: %v", err)
	}
	if d.Type != domType || d.Name != s.Name || d.VCPU.Value != uint(s.VCPUs) || d.Memory.Value != uint(s.MemoryMiB) || d.Memory.Unit != "MiB" {
		t.Errorf("type/name/vcpu/memory = %s/%s/%d/%d%s", d.Type, d.Name, d.VCPU.Value, d.Memory.Value, d.Memory.Unit)
	}
	if d.OS.Kernel != s.Kernel || d.OS.Initrd != s.Initrd || d.OS.Cmdline != s.Cmdline {
		t.Errorf("os = %+v", d.OS)
	}
	switch {
	case s.CPUShares == 0 && d.CPUTune != nil:
		t.Errorf("cputune %+v for a spec without CPUShares", d.CPUTune)
	case s.CPUShares > 0 && (d.CPUTune == nil || d.CPUTune.Shares == nil || d.CPUTune.Shares.Value != uint(s.CPUShares)):
		t.Errorf("cputune = %+v, want shares %d", d.CPUTune, s.CPUShares)
	}
	if d.Features == nil || d.Features.ACPI == nil {
		t.Error("no <acpi/>: poweroff in the guest would only halt it")
	}
	if d.OnPoweroff != "destroy" || d.OnCrash != "destroy" {
		t.Errorf("on_poweroff=%q on_crash=%q, want destroy", d.OnPoweroff, d.OnCrash)
	}
	if got, want := len(d.Devices.Interfaces), map[bool]int{true: 1, false: 0}[s.Network != nil]; got != want {
		t.Errorf("%d interfaces, want %d", got, want)
	}
	if len(d.Devices.Channels) != len(s.Channels) {
		t.Fatalf("%d channels, want %d", len(d.Devices.Channels), len(s.Channels))
	}
	for i, c := range d.Devices.Channels {
		if c.Source.UNIX == nil || c.Source.UNIX.Mode != "bind" || c.Source.UNIX.Path != s.Channels[i].SocketPath || c.Target.VirtIO == nil || c.Target.VirtIO.Name != s.Channels[i].Name {
			t.Errorf("channel %d = %+v", i, c)
		}
	}
	for i, disk := range d.Devices.Disks {
		if disk.Target.Bus != "virtio" || disk.Target.Dev != s.Disks[i].Target || disk.Driver.Type != s.Disks[i].Format || (disk.ReadOnly != nil) != s.Disks[i].ReadOnly ||
			(disk.Shareable != nil) != s.Disks[i].Shareable || disk.Serial != s.Disks[i].Serial {
			t.Errorf("disk %d = %+v", i, disk)
		}
	}
	if len(d.Devices.Filesystems) != len(s.Filesystems) {
		t.Fatalf("%d filesystems, want %d", len(d.Devices.Filesystems), len(s.Filesystems))
	}
	for i, fs := range d.Devices.Filesystems {
		want := s.Filesystems[i]
		if fs.AccessMode != "squash" || fs.Driver != nil || fs.Source == nil || fs.Source.Mount == nil || fs.Source.Mount.Dir != want.Source ||
			fs.Target == nil || fs.Target.Dir != want.Tag || (fs.ReadOnly != nil) != want.ReadOnly {
			t.Errorf("filesystem %d = %+v, want a squash 9p share of %+v", i, fs, want)
		}
	}
	mb := d.MemoryBacking
	switch {
	case domType == "qemu" && (mb == nil || mb.MemorySource == nil || mb.MemorySource.Type != "memfd" || mb.MemoryAccess == nil || mb.MemoryAccess.Mode != "private"):
		t.Errorf("memoryBacking = %+v: under TCG guest RAM is a private memfd (no transparent huge pages)", mb)
	case domType != "qemu" && mb != nil:
		t.Errorf("memoryBacking = %+v: under KVM guest RAM stays anonymous memory", mb)
	case mb != nil && mb.MemoryAccess != nil && mb.MemoryAccess.Mode == "shared" && len(s.Filesystems) > 0:
		t.Errorf("memoryBacking = %+v: 9p needs no shared memory", mb)
	}
	if b := d.Devices.MemBalloon; b == nil || b.Model != "virtio" || b.Stats == nil || b.Stats.Period == 0 {
		t.Errorf("memballoon = %+v, want virtio with a stats period", b)
	}
	if s.ConsoleLog != "" && (len(d.Devices.Serials) != 1 || d.Devices.Serials[0].Log == nil || d.Devices.Serials[0].Log.File != s.ConsoleLog) {
		t.Errorf("serial console not logged to %s", s.ConsoleLog)
	}
	if len(s.Labels) > 0 {
		labels, err := parseLabels(d.Metadata.XML)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range s.Labels {
			if labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, labels[k], v)
			}
		}
	}
	if strings.Contains(doc, "<interface") != (s.Network != nil) {
		t.Error("interface presence does not match Network")
	}
}

func TestXMLAccel(t *testing.T) {
	s := goldenSpecs[0].spec
	for accel, want := range map[Accel]string{AccelKVM: `type="kvm"`, AccelTCG: `type="qemu"`} {
		doc, err := s.XML(accel)
		if err != nil || !strings.Contains(doc, want) {
			t.Errorf("XML(%s) = %v, missing %s", accel, err, want)
		}
	}
	if _, err := s.XML(AccelAuto); err == nil {
		t.Error("XML(auto) should fail: auto must be resolved first")
	}
}
