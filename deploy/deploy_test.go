package deploy_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	_ "github.com/paddockvm/paddock/internal/cli" // registers every configuration key
	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/internal/testutil"
)

func need(t *testing.T, tool, fix string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		testutil.Skip(t, tool+" is not installed", fix)
	}
	return p
}

// TestVagrantValidate runs `vagrant validate` on the repository's Vagrantfile. It checks
// the configuration (providers, provisioners, synced folders, triggers) without a box.
func TestVagrantValidate(t *testing.T) {
	need(t, "vagrant", "run `make setup` (installs vagrant and vagrant-libvirt)")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "vagrant", "validate")
	// VAGRANT_DOTFILE_PATH: validate would otherwise leave a .vagrant/ in the work tree.
	cmd.Env = append(os.Environ(), "VAGRANT_CHECKPOINT_DISABLE=1", "VAGRANT_DEFAULT_PROVIDER=libvirt",
		"VAGRANT_DOTFILE_PATH="+filepath.Join(t.TempDir(), "vagrant"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "validated successfully") {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
}

// vagrantScripts evaluates the Vagrantfile's provisioning scripts with ruby (which
// vagrant brings): the server's and host1's.
func vagrantScripts(t *testing.T) (server, host string) {
	t.Helper()
	need(t, "ruby", "run `make setup` (vagrant brings ruby)")
	out, err := exec.Command("ruby", "-e",
		`module Vagrant; def self.configure(*a); end; end; load "Vagrantfile"; print SERVER, "\n=====\n", host_script("host1")`).CombinedOutput()
	if err != nil {
		t.Fatalf("evaluating the Vagrantfile: %v\n%s", err, out)
	}
	s, h, ok := strings.Cut(string(out), "\n=====\n")
	if !ok {
		t.Fatalf("no separator in %q", out)
	}
	return s, h
}

func init() {
	// The tests run in deploy/; the Vagrantfile is one level up.
	if _, err := os.Stat("Vagrantfile"); err != nil {
		_ = os.Chdir("..")
	}
}

var heredocRE = regexp.MustCompile(`(?s)cat > /etc/paddock/paddock\.yaml <<'?EOF'?\n(.*?)\nEOF\n`)

// TestVagrantConfigsLoad loads the paddock.yaml the Vagrantfile writes into the server
// and into a host VM with Paddock's own loader: a renamed or unknown key fails here.
func TestVagrantConfigsLoad(t *testing.T) {
	server, host := vagrantScripts(t)
	for _, tc := range []struct {
		name, script string
		want         map[string]string
	}{
		{"server", server, map[string]string{"server.cluster_listen": "0.0.0.0:7072", "server.cluster_tls_ca": "/etc/paddock/pki/ca.pem"}},
		{"host1", host, map[string]string{"host.id": "host1", "host.server": "192.168.56.10:7072", "host.tls_cert": "/etc/paddock/pki/host-host1.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := heredocRE.FindStringSubmatch(tc.script)
			if m == nil {
				t.Fatalf("no paddock.yaml heredoc in the %s script:\n%s", tc.name, tc.script)
			}
			f := filepath.Join(t.TempDir(), "paddock.yaml")
			if err := os.WriteFile(f, []byte(strings.ReplaceAll(m[1], "$digest", "3f2a9c1b")), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(f, nil)
			if err != nil {
				t.Fatalf("loading the %s config: %v", tc.name, err)
			}
			for k, v := range tc.want {
				if got := cfg.V.GetString(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestSystemdUnits verifies the units with systemd-analyze (ExecStart pointed at an
// existing binary, since /usr/local/bin/paddock is not installed here).
func TestSystemdUnits(t *testing.T) {
	need(t, "systemd-analyze", "install systemd (apt-get install systemd)")
	dir := t.TempDir()
	var units []string
	for _, u := range []string{"paddock-server.service", "paddock-host.service"} {
		b, err := os.ReadFile(filepath.Join("deploy/systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, want := range []string{"ExecStart=/usr/local/bin/paddock ", "--config /etc/paddock/paddock.yaml", "WantedBy=multi-user.target"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s: no %q", u, want)
			}
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(s, "/usr/local/bin/paddock", "/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	// Without a running systemd, verify still parses every directive; it must say nothing.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestPrometheusConfig parses the scrape configuration and checks its jobs and ports
// (server.listen 7070 serves /metrics; host.metrics_listen 7073).
func TestPrometheusConfig(t *testing.T) {
	b, err := os.ReadFile("deploy/prometheus/paddock.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("deploy/prometheus/paddock.yml: %v", err)
	}
	ports := map[string]string{"paddock-server": "7070", "paddock-host": "7073"}
	for _, sc := range c.ScrapeConfigs {
		port, ok := ports[sc.JobName]
		if !ok {
			t.Errorf("unexpected job %q", sc.JobName)
			continue
		}
		delete(ports, sc.JobName)
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job %s: metrics_path %q", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				if _, p, err := net.SplitHostPort(tg); err != nil || p != port {
					t.Errorf("job %s: target %q, want port %s", sc.JobName, tg, port)
				}
			}
		}
	}
	for j := range ports {
		t.Errorf("no job %s", j)
	}
}

// TestPKIScript makes certificates with deploy/pki.sh and completes a mutual-TLS
// handshake with them through the same loaders the server and the host use; the server
// sees the host's id as the peer's Common Name. A host certificate from another CA is
// refused.
func TestPKIScript(t *testing.T) {
	need(t, "openssl", "apt-get install openssl")
	dir, other := filepath.Join(t.TempDir(), "pki"), filepath.Join(t.TempDir(), "other")
	for _, d := range []string{dir, other} {
		if out, err := exec.Command("bash", "deploy/pki.sh", d, "127.0.0.1,localhost", "host-a").CombinedOutput(); err != nil {
			t.Fatalf("deploy/pki.sh: %v\n%s", err, out)
		}
	}
	srv, err := pki.ServerTLS(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(pkiDir string) (string, error) {
		cli, err := pki.HostTLS(filepath.Join(pkiDir, "host-host-a.pem"), filepath.Join(pkiDir, "host-host-a-key.pem"), filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", srv)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		got := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				got <- ""
				return
			}
			defer c.Close()
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				got <- "error: " + err.Error()
				return
			}
			cn, _ := pki.PeerCommonName(tc.ConnectionState())
			got <- cn
		}()
		c, err := tls.Dial("tcp", l.Addr().String(), cli)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if err := c.Handshake(); err != nil {
			return "", err
		}
		_, _ = c.Write([]byte("x")) // TLS 1.3: the server checks the client certificate now
		return <-got, nil
	}
	cn, err := handshake(dir)
	if err != nil || cn != "host-a" {
		t.Fatalf("handshake with the same CA: cn %q, err %v; want host-a", cn, err)
	}
	if cn, err := handshake(other); err == nil && !strings.HasPrefix(cn, "error:") {
		t.Fatalf("a host certificate from another CA was accepted (cn %q)", cn)
	}
}
