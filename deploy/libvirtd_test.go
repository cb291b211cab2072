package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestHostUnitSurvivesLibvirtdRestart: the host daemon's unit orders itself after
// libvirtd and wants it, but does not Require= it: with Requires= a libvirtd restart
// (an apt upgrade) restarts the host daemon, whose stop destroys every guest. The
// daemon reconnects to libvirt by itself (hypervisor's TestReconnectAfterLibvirtdRestart).
func TestHostUnitSurvivesLibvirtdRestart(t *testing.T) {
	b, err := os.ReadFile("deploy/systemd/paddock-host.service")
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			directives[k] += " " + v
		}
	}
	for _, k := range []string{"Requires", "BindsTo", "PartOf", "Requisite"} {
		if strings.Contains(directives[k], "libvirtd") {
			t.Errorf("paddock-host.service has %s=%s: a libvirtd restart would stop the host daemon and its guests", k, directives[k])
		}
	}
	for _, k := range []string{"Wants", "After"} {
		if !strings.Contains(directives[k], "libvirtd.service") {
			t.Errorf("paddock-host.service: %s= lacks libvirtd.service (got %q)", k, directives[k])
		}
	}
}

// TestVagrantAgentPortHasToken: the Vagrant server opens the TCP agent port on the VM
// network only with an agent token set (or keeps it on loopback).
func TestVagrantAgentPortHasToken(t *testing.T) {
	server, _ := vagrantScripts(t)
	m := regexp.MustCompile(`agent_listen: "([^"]*)"`).FindStringSubmatch(server)
	if m == nil || strings.HasPrefix(m[1], "127.") || m[1] == "" {
		return // no agent port, or on loopback
	}
	if !strings.Contains(server, "PADDOCK_SERVER_AGENT_TOKEN=") {
		t.Errorf("the Vagrant server listens for agents on %s without an agent token (PADDOCK_SERVER_AGENT_TOKEN)", m[1])
	}
}
