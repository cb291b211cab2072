package hypervisor

import (
	"encoding/xml"
	"fmt"
	"runtime"

	"libvirt.org/go/libvirtxml"
)

// MetadataNamespace is the XML namespace of Paddock's <metadata> element (labels).
const MetadataNamespace = "https://paddockvm.dev/xmlns/domain/1"

// metadataKey is the namespace prefix libvirt is told to use for MetadataNamespace.
const metadataKey = "paddock"

// BalloonStatsPeriod is how often (seconds) the guest's balloon driver reports memory
// statistics.
const BalloonStatsPeriod = 5

type xmlLabels struct {
	XMLName xml.Name   `xml:"https://paddockvm.dev/xmlns/domain/1 labels"`
	Labels  []xmlLabel `xml:"label"`
}

type xmlLabel struct {
	Key   string `xml:"key,attr"`
	Value string `xml:"value,attr"`
}

// XML renders the spec as libvirt domain XML for the given acceleration (kvm → domain
// type "kvm", tcg → "qemu"). It does not check files; call Validate first.
func (s DomainSpec) XML(accel Accel) (string, error) {
	switch accel {
	case AccelKVM:
		return s.domainXML("kvm")
	case AccelTCG:
		return s.domainXML("qemu")
	}
	return "", fieldErr("accel", "use kvm or tcg (resolve auto with ChooseAccel first)", "%q", accel)
}

func guestArch() string {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return "x86_64"
}

// domainXML builds the libvirtxml document; domType is "kvm", "qemu" or "test".
func (s DomainSpec) domainXML(domType string) (string, error) {
	return s.domainXMLWith(domType, nil)
}

// domainXMLWith is domainXML with edit (when not nil) applied before encoding.
func (s DomainSpec) domainXMLWith(domType string, edit func(*libvirtxml.Domain) error) (string, error) {
	uintp := func(v uint) *uint { return &v }
	d := &libvirtxml.Domain{
		Type:          domType,
		Name:          s.Name,
		Memory:        &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		CurrentMemory: &libvirtxml.DomainCurrentMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:          &libvirtxml.DomainVCPU{Placement: "static", Value: uint(s.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Arch: guestArch(), Type: "hvm"},
			Kernel:  s.Kernel,
			Initrd:  s.Initrd,
			Cmdline: s.Cmdline,
		},
		// ACPI: without it a guest's poweroff only halts the CPU and the domain stays running.
		// No VMware backdoor port: nothing in the guest uses it. (The PS/2 controller
		// stays: <ps2 state='off'/> needs libvirt 9.2 or later, Debian 12 has 9.0.)
		Features: &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, VMPort: &libvirtxml.DomainFeatureState{State: "off"}},
		// The HPET stays: without it the Debian kernel under TCG logs "8254 timer not
		// connected to IO-APIC" and took minutes longer to boot on a loaded host.
		OnPoweroff: "destroy",
		OnReboot:   "destroy",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	if domType == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if domType == "qemu" && s.TBCacheMiB > 0 {
		d.Features.TCG = &libvirtxml.DomainFeatureTCG{TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: uint(s.TBCacheMiB)}}
	}
	if domType == "qemu" {
		// Guest RAM from a private memfd rather than anonymous memory, under TCG only.
		// QEMU asks for transparent huge pages on anonymous guest RAM, and a guest
		// restored from a snapshot writes its non-zero pages all over its RAM: with huge
		// pages every 2 MiB touched became resident, 454 MiB of host RSS for a 384 MiB
		// guest against 210 MiB with this (cold boots: 247 against 245). A private
		// mapping's written pages are still anonymous, so KSM can merge them. Under KVM
		// huge pages make the guest faster (the EPT maps them), so RAM stays anonymous.
		d.MemoryBacking = &libvirtxml.DomainMemoryBacking{
			MemorySource: &libvirtxml.DomainMemorySource{Type: "memfd"},
			MemoryAccess: &libvirtxml.DomainMemoryAccess{Mode: "private"},
		}
	}
	if s.CPUShares > 0 {
		d.CPUTune = &libvirtxml.DomainCPUTune{Shares: &libvirtxml.DomainCPUTuneShares{Value: uint(s.CPUShares)}}
	}
	if len(s.Labels) > 0 {
		l := xmlLabels{}
		for _, k := range sortedKeys(s.Labels) {
			l.Labels = append(l.Labels, xmlLabel{Key: k, Value: s.Labels[k]})
		}
		b, err := xml.Marshal(l)
		if err != nil {
			return "", fmt.Errorf("encoding labels of %s: %w", s.Name, err)
		}
		d.Metadata = &libvirtxml.DomainMetadata{XML: string(b)}
	}
	dev := d.Devices
	for _, disk := range s.Disks {
		dd := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: disk.Target, Bus: "virtio"},
		}
		if disk.ReadOnly {
			dd.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		if disk.Shareable {
			dd.Shareable = &libvirtxml.DomainDiskShareable{}
		}
		dd.Serial = disk.Serial
		dev.Disks = append(dev.Disks, dd)
	}
	for _, fs := range s.Filesystems {
		// squash: QEMU (not root) opens files as itself, and the guest's chown/chmod to
		// other owners succeed without effect instead of failing (docs/dataplane.md).
		fd := libvirtxml.DomainFilesystem{
			AccessMode: "squash",
			Source:     &libvirtxml.DomainFilesystemSource{Mount: &libvirtxml.DomainFilesystemSourceMount{Dir: fs.Source}},
			Target:     &libvirtxml.DomainFilesystemTarget{Dir: fs.Tag},
		}
		if fs.ReadOnly {
			fd.ReadOnly = &libvirtxml.DomainFilesystemReadOnly{}
		}
		dev.Filesystems = append(dev.Filesystems, fd)
	}
	// No USB controller: nothing uses it and it costs boot time.
	dev.Controllers = append(dev.Controllers, libvirtxml.DomainController{Type: "usb", Model: "none"})
	if n := s.Network; n != nil {
		iface := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		}
		if n.Network != "" {
			iface.Source.Network = &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Network}
		} else {
			iface.Source.Bridge = &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}
		}
		if n.MAC != "" {
			iface.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC}
		}
		dev.Interfaces = append(dev.Interfaces, iface)
	}
	serial := libvirtxml.DomainSerial{
		Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
		Target: &libvirtxml.DomainSerialTarget{Type: "isa-serial", Port: uintp(0)},
	}
	if s.ConsoleLog != "" {
		serial.Log = &libvirtxml.DomainChardevLog{File: s.ConsoleLog, Append: "off"}
	}
	dev.Serials = append(dev.Serials, serial)
	dev.Consoles = append(dev.Consoles, libvirtxml.DomainConsole{
		Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
		Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: uintp(0)},
	})
	for _, c := range s.Channels {
		dev.Channels = append(dev.Channels, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: c.SocketPath}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: c.Name}},
		})
	}
	// A virtio RNG fed from the host's /dev/urandom: the guest's kernel (virtio_rng,
	// kmod.DefaultGuestModules) seeds its CRNG from it at boot, instead of waiting for
	// its own jitter entropy (seconds under TCG, during which the first getrandom(2)
	// of a freshly booted guest blocks), and a guest restored from a snapshot draws
	// fresh host entropy. Rate-limited to RNGBytesPerSecond so that no guest can keep
	// the host busy feeding it.
	dev.RNGs = append(dev.RNGs, libvirtxml.DomainRNG{
		Model:   "virtio",
		Rate:    &libvirtxml.DomainRNGRate{Bytes: RNGBytesPerSecond, Period: 1000},
		Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
	})
	// Free page reporting: the guest's balloon driver (virtio_balloon) hands pages it
	// frees back to QEMU, which drops them, so a guest's host RSS falls after a burst
	// (unpacking the initramfs, a task) instead of staying at its high-water mark.
	dev.MemBalloon = &libvirtxml.DomainMemBalloon{
		Model: "virtio", FreePageReporting: "on",
		Stats: &libvirtxml.DomainMemBalloonStats{Period: BalloonStatsPeriod},
	}
	if edit != nil {
		if err := edit(d); err != nil {
			return "", err
		}
	}
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("encoding domain XML of %s: %w", s.Name, err)
	}
	return out, nil
}

// RNGBytesPerSecond bounds what a guest's virtio RNG may read from the host's
// /dev/urandom: ample for seeding and reseeding a kernel's CRNG (32 bytes each).
const RNGBytesPerSecond = 4096

// parseLabels reads the labels element returned by virDomainGetMetadata.
func parseLabels(metadata string) (map[string]string, error) {
	// libvirt hands the element back without its namespace: match the local name only.
	var l struct {
		XMLName xml.Name   `xml:"labels"`
		Labels  []xmlLabel `xml:"label"`
	}
	if err := xml.Unmarshal([]byte(metadata), &l); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(l.Labels))
	for _, kv := range l.Labels {
		m[kv.Key] = kv.Value
	}
	return m, nil
}
