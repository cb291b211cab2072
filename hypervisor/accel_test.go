package hypervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	cpuinfoVMX = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2\n\nprocessor\t: 1\nflags\t\t: fpu vme vmx\n"
	cpuinfoSVM = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu svm lm\n"
	// cpuinfoPVM is this kind of machine: a cloud VM whose /dev/kvm is paravirtual.
	cpuinfoPVM = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr hypervisor sse sse2 vmxnot svmx\n"
)

func TestParseCPUFlag(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"intel", cpuinfoVMX, "vmx"},
		{"amd", cpuinfoSVM, "svm"},
		{"paravirtual", cpuinfoPVM, ""},
		{"empty", "", ""},
		{"vmx outside flags", "model name\t: vmx svm\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseCPUFlag(c.in); got != c.want {
				t.Errorf("ParseCPUFlag = %q, want %q", got, c.want)
			}
		})
	}
}

// probe writes cpuinfo to a file and returns ProbeHost with /dev/null (a character
// device) or a missing path as the KVM device.
func probe(t *testing.T, cpuinfo string, kvmDev bool) HostVirt {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cpuinfo")
	if err := os.WriteFile(f, []byte(cpuinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := "/dev/null"
	if !kvmDev {
		dev = filepath.Join(t.TempDir(), "kvm-missing")
	}
	return ProbeHost(f, dev)
}

func TestChooseAccel(t *testing.T) {
	cases := []struct {
		name      string
		cpuinfo   string
		kvmDev    bool
		requested Accel
		want      Accel
		wantType  string
		wantErr   bool
	}{
		{"auto with vmx and device", cpuinfoVMX, true, AccelAuto, AccelKVM, "kvm", false},
		{"auto with svm and device", cpuinfoSVM, true, AccelAuto, AccelKVM, "kvm", false},
		{"auto paravirtual kvm device only", cpuinfoPVM, true, AccelAuto, AccelTCG, "qemu", false},
		{"auto vmx without device", cpuinfoVMX, false, AccelAuto, AccelTCG, "qemu", false},
		{"auto nothing", cpuinfoPVM, false, AccelAuto, AccelTCG, "qemu", false},
		{"empty means auto", cpuinfoPVM, true, "", AccelTCG, "qemu", false},
		{"tcg forced on kvm host", cpuinfoVMX, true, AccelTCG, AccelTCG, "qemu", false},
		{"kvm where it works", cpuinfoSVM, true, AccelKVM, AccelKVM, "kvm", false},
		{"kvm on paravirtual device", cpuinfoPVM, true, AccelKVM, "", "", true},
		{"kvm without device", cpuinfoVMX, false, AccelKVM, "", "", true},
		{"unknown accel", cpuinfoVMX, true, "xen", "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := ChooseAccel(c.requested, probe(t, c.cpuinfo, c.kvmDev))
			if c.wantErr {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != "hypervisor.accel" || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want a *FieldError for hypervisor.accel", err)
				}
				if !strings.Contains(err.Error(), "auto") || !strings.Contains(err.Error(), "tcg") {
					t.Errorf("error %q does not say the fix (auto or tcg)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ChooseAccel: %v", err)
			}
			if d.Accel != c.want || d.DomainType != c.wantType || d.Reason == "" {
				t.Fatalf("decision = %+v, want %s/%s with a reason", d, c.want, c.wantType)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"default", func(*Config) {}, ""},
		{"test uri", func(c *Config) { c.URI = "test:///default" }, ""},
		{"empty uri", func(c *Config) { c.URI = "" }, "hypervisor.uri"},
		{"not a uri", func(c *Config) { c.URI = "system" }, "hypervisor.uri"},
		{"empty prefix", func(c *Config) { c.Prefix = "" }, "hypervisor.prefix"},
		{"bad prefix", func(c *Config) { c.Prefix = "pad dock/" }, "hypervisor.prefix"},
		{"bad accel", func(c *Config) { c.Accel = "hvf" }, "hypervisor.accel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || fe.Fix == "" {
				t.Fatalf("Validate = %v, want a *FieldError for %s with a fix", err, c.field)
			}
		})
	}
}
