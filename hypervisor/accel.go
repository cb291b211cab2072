package hypervisor

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Default probe locations.
const (
	DefaultCPUInfoPath = "/proc/cpuinfo"
	DefaultKVMDevice   = "/dev/kvm"
)

// HostVirt is what the host offers for hardware virtualization.
type HostVirt struct {
	// CPUFlag is "vmx" (Intel VT-x) or "svm" (AMD-V) when /proc/cpuinfo lists it, else "".
	CPUFlag string
	// KVMDevice is the path probed; KVMDeviceOK whether it exists as a character device.
	KVMDevice   string
	KVMDeviceOK bool
	// KVMDeviceErr says why it is not usable (empty when KVMDeviceOK).
	KVMDeviceErr string
}

// ParseCPUFlag returns "vmx" or "svm" if any "flags" line of /proc/cpuinfo text lists
// it, else "".
func ParseCPUFlag(cpuinfo string) string {
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
	}
	return ""
}

// ProbeHost reads cpuinfoPath and stats kvmDevice.
func ProbeHost(cpuinfoPath, kvmDevice string) HostVirt {
	h := HostVirt{KVMDevice: kvmDevice}
	if b, err := os.ReadFile(cpuinfoPath); err == nil {
		h.CPUFlag = ParseCPUFlag(string(b))
	}
	fi, err := os.Stat(kvmDevice)
	switch {
	case err != nil:
		h.KVMDeviceErr = err.Error()
	case fi.Mode()&os.ModeCharDevice == 0:
		h.KVMDeviceErr = kvmDevice + " is not a character device"
	default:
		h.KVMDeviceOK = true
	}
	return h
}

// AccelDecision is the acceleration chosen and why.
type AccelDecision struct {
	Accel      Accel  // kvm or tcg, never auto
	DomainType string // libvirt <domain type=…>: "kvm" or "qemu"
	Reason     string // one sentence for the log
}

// KVMUsable reports whether KVM can really run guests here: the CPU advertises vmx or
// svm AND the KVM device exists. /dev/kvm alone is not enough: a paravirtual KVM
// (e.g. kvm_pvm inside a cloud VM) provides /dev/kvm without vmx/svm, and guests hang on it.
func (h HostVirt) KVMUsable() (bool, string) {
	switch {
	case h.CPUFlag == "" && h.KVMDeviceOK:
		return false, h.KVMDevice + " exists but the CPU flags in /proc/cpuinfo have neither vmx nor svm (a paravirtual KVM: guests hang on it)"
	case h.CPUFlag == "":
		return false, "the CPU flags in /proc/cpuinfo have neither vmx nor svm, and " + h.KVMDevice + " is unusable: " + h.KVMDeviceErr
	case !h.KVMDeviceOK:
		return false, "the CPU has " + h.CPUFlag + " but " + h.KVMDevice + " is unusable: " + h.KVMDeviceErr + " (is the kvm module loaded?)"
	}
	return true, "the CPU has " + h.CPUFlag + " and " + h.KVMDevice + " exists"
}

// ChooseAccel turns the configured acceleration into a decision for this host.
// requested kvm where KVM cannot work is an error naming hypervisor.accel.
func ChooseAccel(requested Accel, h HostVirt) (AccelDecision, error) {
	ok, why := h.KVMUsable()
	switch requested {
	case AccelTCG:
		return AccelDecision{Accel: AccelTCG, DomainType: "qemu", Reason: "hypervisor.accel is tcg (software emulation); " + why}, nil
	case AccelKVM:
		if !ok {
			return AccelDecision{}, fieldErr("hypervisor.accel",
				"set hypervisor.accel to auto or tcg (PADDOCK_HYPERVISOR_ACCEL=tcg), or run on a host with hardware virtualization",
				"kvm requested but KVM cannot work here: %s", why)
		}
		return AccelDecision{Accel: AccelKVM, DomainType: "kvm", Reason: "hypervisor.accel is kvm and " + why}, nil
	case AccelAuto, "":
		if ok {
			return AccelDecision{Accel: AccelKVM, DomainType: "kvm", Reason: "auto: " + why}, nil
		}
		return AccelDecision{Accel: AccelTCG, DomainType: "qemu", Reason: "auto: using tcg (software emulation) because " + why}, nil
	}
	return AccelDecision{}, fieldErr("hypervisor.accel", "use auto, kvm or tcg", "%q is not an acceleration", requested)
}

func (d AccelDecision) String() string { return fmt.Sprintf("%s (%s)", d.Accel, d.Reason) }
