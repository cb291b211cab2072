package buildinfo

import "runtime/debug"

// Version is set with -ldflags "-X github.com/paddockvm/paddock/internal/buildinfo.Version=…".
var Version = ""

// String returns the version, falling back to the module's VCS revision, then "dev".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}
