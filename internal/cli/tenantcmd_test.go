package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/sched"
)

// TestTokenAndUsageCommands: the admin makes a tenant's token with paddock token
// create, lists it, the tenant's token reads its usage (no prices: a plain note), and
// after paddock token revoke the same token is refused.
func TestTokenAndUsageCommands(t *testing.T) {
	const admin = "cli-admin-token"
	ls, err := startLocalServer(context.Background(), t.TempDir(), sched.Config{Token: admin, AgentToken: "cli-agent-token",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Stop)
	tok, errOut := mustRun(t, "token", "create", "--server", ls.URL, "--token", admin, "--tenant", "acme")
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, "pdk_") || !strings.Contains(errOut, "tenant acme") {
		t.Fatalf("token create printed %q / %q", tok, errOut)
	}
	out, _ := mustRun(t, "token", "ls", "--server", ls.URL, "--token", admin)
	if !strings.Contains(out, "acme") || strings.Contains(out, tok) {
		t.Fatalf("token ls printed:\n%s\nwant acme's token listed without its text", out)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	if _, errOut, code := run(t, "token", "ls", "--server", ls.URL, "--token", tok); code == 0 || !strings.Contains(errOut, "admin token") {
		t.Fatalf("token ls with a tenant's token: exit %d, %s", code, errOut)
	}
	out, errOut = mustRun(t, "usage", "--server", ls.URL, "--token", tok, "--since", "1h")
	if !strings.Contains(out, "TENANT") || !strings.Contains(errOut, "note: no cost: prices not configured (server.prices.cpu_second") {
		t.Fatalf("usage without prices printed %q / %q", out, errOut)
	}
	if _, errOut, code := run(t, "usage", "--server", ls.URL, "--token", tok, "--tenant", "other"); code == 0 || !strings.Contains(errOut, "tenant:") {
		t.Fatalf("usage of another tenant: exit %d, %s", code, errOut)
	}
	mustRun(t, "token", "revoke", "--server", ls.URL, "--token", admin, id)
	if _, errOut, code := run(t, "usage", "--server", ls.URL, "--token", tok); code == 0 || !strings.Contains(errOut, "revoked") {
		t.Fatalf("usage with a revoked token: exit %d, %s", code, errOut)
	}
	if _, errOut, code := run(t, "token", "create", "--server", ls.URL, "--token", admin); code != 2 || !strings.Contains(errOut, "--tenant") {
		t.Fatalf("token create without --tenant: exit %d, %s", code, errOut)
	}
}

func yamlViper(t *testing.T, doc string) *viper.Viper {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTenantsConfig(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
	}{
		{"ok", "tenants:\n  acme: {weight: 3, max_running: 8, max_queued: 1000, max_blob_bytes: 10GiB}\n  small: {max_queued: 5, max_blob_bytes: 4096}\n", ""},
		{"blob limit not a size", "tenants:\n  acme: {max_blob_bytes: lots}\n", `tenants.acme.max_blob_bytes: "lots": want bytes`},
		{"negative blob limit", "tenants:\n  acme: {max_blob_bytes: -1}\n", "tenants.acme.max_blob_bytes"},
		{"unknown setting", "tenants:\n  acme: {max_runing: 8}\n", "tenants.acme.max_runing: unknown tenant setting"},
		{"negative max_running", "tenants:\n  acme: {max_running: -1}\n", "tenants.acme.max_running: -1 is negative"},
		{"negative max_queued", "tenants:\n  acme: {max_queued: -3}\n", "tenants.acme.max_queued: -3 is negative"},
		{"not a number", "tenants:\n  acme: {weight: lots}\n", "tenants.acme.weight"},
		{"fraction of a task", "tenants:\n  acme: {max_running: 1.5}\n", "tenants.acme.max_running: 1.5 is not a whole number"},
		{"not a map", "tenants:\n  acme: 3\n", "tenants.acme: want a map"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tenantsConfig(yamlViper(t, tc.doc))
			if tc.wantErr == "" {
				if err != nil || c["acme"].Weight != 3 || c["acme"].MaxRunning != 8 || c["small"].MaxQueued != 5 ||
					c["acme"].MaxBlobBytes != 10<<30 || c["small"].MaxBlobBytes != 4096 {
					t.Fatalf("tenantsConfig = %+v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("tenantsConfig = %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestPricesConfig(t *testing.T) {
	p, err := prices(yamlViper(t, "server:\n  prices: {cpu_second: 0.00002, gib_second: \"0.000003\"}\n"))
	if err != nil || p.CPUSecond == nil || *p.CPUSecond != 0.00002 || *p.GiBSecond != 0.000003 || p.GiBMoved != nil {
		t.Fatalf("prices = %+v, %v", p, err)
	}
	if _, err := prices(yamlViper(t, "server:\n  prices: {gib_moved: cheap}\n")); err == nil || !strings.Contains(err.Error(), "server.prices.gib_moved") {
		t.Fatalf("a price that is not a number: %v", err)
	}
	if _, err := prices(yamlViper(t, "server:\n  prices: {cpu_second: -1}\n")); err == nil || !strings.Contains(err.Error(), "server.prices.cpu_second") {
		t.Fatalf("a negative price: %v", err)
	}
	if p, err := prices(viper.New()); err != nil || len(p.Missing()) != 3 {
		t.Fatalf("no prices = %+v, %v; want all three missing, no error", p, err)
	}
}

// TestTenantsInConfigFile: the loader does not refuse tenants.<name>.* as unknown keys.
func TestTenantsInConfigFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("tenants:\n  acme:\n    weight: 2\nserver:\n  prices:\n    cpu_second: 0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, "config", "show", "--config", file); code != 0 {
		t.Fatalf("config show with tenants: exit %d: %s", code, errOut)
	}
}
