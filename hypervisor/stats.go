package hypervisor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
)

const statsTypes = libvirt.DOMAIN_STATS_STATE | libvirt.DOMAIN_STATS_CPU_TOTAL | libvirt.DOMAIN_STATS_BALLOON |
	libvirt.DOMAIN_STATS_VCPU | libvirt.DOMAIN_STATS_BLOCK

// Stats returns GetAllDomainStats figures for the named running domains (all running
// prefixed domains when names is empty).
func (l *Libvirt) Stats(ctx context.Context, names ...string) ([]DomainStats, error) {
	for _, n := range names {
		if err := l.checkName(n); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var doms []*libvirt.Domain
	defer func() {
		for _, d := range doms {
			d.Free()
		}
	}()
	if len(names) == 0 {
		all, err := l.c().ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_ACTIVE)
		if err != nil {
			return nil, fmt.Errorf("listing domains for stats: %w", classify(err))
		}
		for i := range all {
			if n, err := all[i].GetName(); err == nil && strings.HasPrefix(n, l.cfg.Prefix) {
				doms = append(doms, &all[i])
			} else {
				all[i].Free()
			}
		}
	} else {
		for _, n := range names {
			d, err := l.lookup(n)
			if err != nil {
				return nil, fmt.Errorf("stats of domain %s: %w", n, err)
			}
			doms = append(doms, d)
			if active, err := d.IsActive(); err != nil || !active {
				return nil, fmt.Errorf("stats of domain %s: %w: not running", n, ErrNotFound)
			}
		}
	}
	if len(doms) == 0 {
		return nil, nil // an empty list would mean "every domain" to libvirt
	}
	// NOWAIT: a domain whose job lock is held (being saved, restored, created) is
	// reported with what needs no lock (state, CPU) instead of holding this call, and
	// every lock it took, until that job ends.
	raw, err := l.c().GetAllDomainStats(doms, statsTypes, libvirt.CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
	if err != nil {
		return nil, fmt.Errorf("getting domain stats: %w", classify(err))
	}
	out := make([]DomainStats, 0, len(raw))
	for i := range raw {
		out = append(out, convertStats(&raw[i]))
		raw[i].Domain.Free()
	}
	return out, nil
}

// cpuTypes are the statistics CPUTimes reads: neither needs the domain's monitor
// (QMP), so libvirt takes no job on the domain and waits for no QEMU to answer.
const cpuTypes = libvirt.DOMAIN_STATS_STATE | libvirt.DOMAIN_STATS_CPU_TOTAL

// CPUTimes implements Hypervisor.
func (l *Libvirt) CPUTimes(ctx context.Context) (map[string]time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The local system daemon: from /proc, without libvirt's domain locks (proccpu.go).
	// None read (no guests, or pid files this process cannot read): libvirt's figures.
	if l.procDir != "" {
		if out, err := procCPUTimes(l.procDir, l.cfg.Prefix); err == nil && len(out) > 0 {
			return out, nil
		}
	}
	raw, err := l.c().GetAllDomainStats(nil, cpuTypes, libvirt.CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
	if err != nil {
		return nil, fmt.Errorf("getting domains' CPU times: %w", classify(err))
	}
	out := make(map[string]time.Duration, len(raw))
	for i := range raw {
		if n, err := raw[i].Domain.GetName(); err == nil && strings.HasPrefix(n, l.cfg.Prefix) && raw[i].Cpu != nil {
			out[n] = time.Duration(raw[i].Cpu.Time)
		}
		raw[i].Domain.Free()
	}
	return out, nil
}

func convertStats(r *libvirt.DomainStats) DomainStats {
	s := DomainStats{State: StateUnknown}
	s.Name, _ = r.Domain.GetName()
	if r.State != nil && r.State.StateSet {
		s.State = stateOf(r.State.State)
	}
	if c := r.Cpu; c != nil {
		s.CPUTime = time.Duration(c.Time)
		s.CPUUser = time.Duration(c.User)
		s.CPUSystem = time.Duration(c.System)
	}
	if b := r.Balloon; b != nil {
		s.Balloon = BalloonStats{CurrentKiB: b.Current, MaximumKiB: b.Maximum, AvailableKiB: b.Available,
			UsableKiB: b.Usable, UnusedKiB: b.Unused, RSSKiB: b.Rss}
	}
	s.VCPUs.Maximum = len(r.Vcpu) // the binding sizes Vcpu by vcpu.maximum
	for _, v := range r.Vcpu {
		if !(v.StateSet && v.State == libvirt.VCPU_OFFLINE) {
			s.VCPUs.Current++
		}
		s.VCPUs.Time = append(s.VCPUs.Time, time.Duration(v.Time))
	}
	for _, b := range r.Block {
		s.Blocks = append(s.Blocks, BlockStats{Name: b.Name, Path: b.Path, RdBytes: b.RdBytes, WrBytes: b.WrBytes, RdReqs: b.RdReqs, WrReqs: b.WrReqs})
	}
	return s
}
