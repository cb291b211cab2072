package cli

import (
	"context"
	"fmt"

	"github.com/paddockvm/paddock/hypervisor"
)

func init() { hypervisorVersions = libvirtVersions }

// hypervisorConfig reads the hypervisor.* keys into a validated hypervisor.Config.
func hypervisorConfig(app *App) (hypervisor.Config, error) {
	cfg := hypervisor.Config{
		URI:    app.Cfg.V.GetString("hypervisor.uri"),
		Prefix: app.Cfg.V.GetString("hypervisor.prefix"),
		Accel:  hypervisor.Accel(app.Cfg.V.GetString("hypervisor.accel")),
	}
	return cfg, cfg.Validate()
}

// connectHypervisor connects to libvirt with the configured hypervisor.* keys. The caller
// closes the returned connection.
func connectHypervisor(ctx context.Context, app *App) (*hypervisor.Libvirt, error) {
	cfg, err := hypervisorConfig(app)
	if err != nil {
		return nil, err
	}
	return hypervisor.Connect(ctx, cfg, hypervisor.WithLogger(app.Log))
}

func libvirtVersions(ctx context.Context, app *App) (map[string]string, error) {
	hv, err := connectHypervisor(ctx, app)
	if err != nil {
		return nil, err
	}
	defer hv.Close()
	v, err := hv.Versions(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking %s for versions: %w", hv.URI(), err)
	}
	return map[string]string{
		"libvirt": v.Libvirt,
		"qemu":    v.Hypervisor,
		"accel":   hv.Accel().String(),
		"uri":     hv.URI(),
	}, nil
}
