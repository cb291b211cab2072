package vmpool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
)

// Warm start from a snapshot (PoolConfig.WarmStart = WarmSnapshot).
//
// Once per pool and image, a template guest is booted with agent.CmdlineWarmKey=1: its
// agent starts its handlers, writes its ready line and waits for an identity line. The
// pool then saves the template's memory and device state (hypervisor.Snapshotter) with
// its scratch disk, if any, into Config.SnapshotDir/<pool>/, writes a manifest beside
// it, and destroys the template. Every later guest of the pool is restored from that
// state as its own domain (own name, UUID, generation id, socket, shares, and a
// copy-on-write overlay on the template's disk), then handed its identity and a random
// seed over its own port (agent.Identity, SocketConnector.WaitReadyAs).
//
// Until the snapshot exists, and whenever it cannot be used, guests boot cold: a
// missing, truncated or mismatched snapshot (other image, pool configuration, QEMU,
// libvirt or state format), a save that fails (disk full), a restore that fails half
// way, or a restored guest without a ready line in time. Each is logged as a warning;
// the snapshot is dropped and rebuilt after RetryInterval.

// snapshotManifest is written beside a pool's state file (manifestFile).
type snapshotManifest struct {
	Format     string `json:"format"`      // hypervisor.StateFormatVersion
	Image      string `json:"image"`       // the image digest
	ConfigHash string `json:"config_hash"` // sha256 of what in the pool's configuration shapes the guest
	QEMU       string `json:"qemu"`        // hypervisor version ("7.2.22")
	Libvirt    string `json:"libvirt"`
	Template   string `json:"template"`           // the template's cmdline (clones reuse it)
	Disk       string `json:"disk,omitempty"`     // the template's scratch disk, a file name in the directory
	StateSize  int64  `json:"state_size"`         // bytes of stateFile
	StateSHA   string `json:"state_sha256"`       // checked once per process before first use
	Created    string `json:"created"`            // RFC 3339
	BuildMS    int64  `json:"build_ms,omitempty"` // template create → state saved
}

const (
	stateFile    = "state"
	manifestFile = "manifest.json"
)

// warmState is a pool's snapshot.
type warmState struct {
	mu       sync.Mutex // guards the fields below
	snap     *snapshot  // usable snapshot, nil when none
	building bool
	nextTry  time.Time // wall clock; no build before
	warned   string    // last "cannot warm start" warning, logged once
}

type snapshot struct {
	dir string
	man snapshotManifest
}

func (s *snapshot) state() string { return filepath.Join(s.dir, stateFile) }

// snapshotter returns the hypervisor's Snapshotter, or nil.
func (p *pool) snapshotter() hypervisor.Snapshotter {
	s, _ := p.m.hv.(hypervisor.Snapshotter)
	return s
}

// want reports the manifest fields a usable snapshot of img must have (all but the
// file ones).
func (p *pool) wantManifest(ctx context.Context, img images.Image) (snapshotManifest, error) {
	v, ok := p.m.hv.(interface {
		Versions(context.Context) (hypervisor.Versions, error)
	})
	if !ok {
		return snapshotManifest{}, errors.New("the hypervisor does not report its versions")
	}
	ver, err := v.Versions(ctx)
	if err != nil {
		return snapshotManifest{}, err
	}
	shape := struct {
		VCPUs, MemoryMiB, ScratchMiB, TBCacheMiB int
		Cmdline, Port                            string
		Shares                                   bool
	}{p.cfg.VCPUs, p.cfg.MemoryMiB, p.cfg.ScratchMiB, p.cfg.TBCacheMiB, p.cfg.Cmdline, agent.DefaultPort, !p.m.cfg.DisableShares}
	b, _ := json.Marshal(shape)
	sum := sha256.Sum256(b)
	return snapshotManifest{Format: hypervisor.StateFormatVersion, Image: img.Digest, ConfigHash: hex.EncodeToString(sum[:]),
		QEMU: ver.HypervisorType + " " + ver.Hypervisor, Libvirt: ver.Libvirt}, nil
}

// matches reports why m cannot stand for want ("" when it can).
func (m snapshotManifest) mismatch(want snapshotManifest) string {
	switch {
	case m.Format != want.Format:
		return fmt.Sprintf("state format %q, want %q", m.Format, want.Format)
	case m.Image != want.Image:
		return fmt.Sprintf("made from image %.19s, the pool now runs %.19s", m.Image, want.Image)
	case m.ConfigHash != want.ConfigHash:
		return "the pool's configuration changed"
	case m.QEMU != want.QEMU:
		return fmt.Sprintf("made by %s, the host now runs %s", m.QEMU, want.QEMU)
	case m.Libvirt != want.Libvirt:
		return fmt.Sprintf("made under libvirt %s, the host now runs %s", m.Libvirt, want.Libvirt)
	}
	return ""
}

// warmSnapshot returns the snapshot to restore g from, or nil to boot cold; when there
// is none yet it starts building one in the background.
func (p *pool) warmSnapshot(img images.Image) *snapshot {
	if p.cfg.WarmStart != WarmSnapshot {
		return nil
	}
	w := &p.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snap != nil && w.snap.man.Image == img.Digest {
		return w.snap
	}
	if w.snap != nil {
		p.log.Warn("warm start: dropping the snapshot of an older image", "had", w.snap.man.Image, "image", img.Digest)
		w.snap = nil
	}
	if p.snapshotter() == nil {
		if w.warned == "" {
			w.warned = "no snapshotter"
			p.log.Warn("warm_start snapshot: this hypervisor cannot save and restore guests; booting cold")
		}
		return nil
	}
	if !w.building && time.Now().After(w.nextTry) {
		w.building = true
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.buildSnapshot(img)
		}()
	}
	return nil
}

// loadSnapshotOnDisk runs once, when the pool starts and before it boots any guest:
// it takes the snapshot an earlier run of the daemon left in the pool's snapshot
// directory when its manifest matches the pool, its image, QEMU and libvirt, and its
// state file has the recorded size and sha256 (one read of the file: about a second
// per few hundred MiB here), so a restarted daemon restores its first guests rather
// than booting them cold. A snapshot that does not pass is removed with a warning; the
// pool boots cold and makes a new one in the background, as on a first start.
func (p *pool) loadSnapshotOnDisk(ctx context.Context) {
	if p.cfg.WarmStart != WarmSnapshot || p.snapshotter() == nil {
		return
	}
	p.mu.Lock()
	img := p.img
	p.mu.Unlock()
	want, err := p.wantManifest(ctx, img)
	if err != nil {
		p.log.Warn("warm start: cannot check the snapshot on disk; it is checked again before a new one is made", "err", err)
		return
	}
	dir, begin := p.snapshotDir(), time.Now()
	snap, why := loadSnapshot(dir, want)
	switch {
	case snap != nil:
		w := &p.warm
		w.mu.Lock()
		w.snap = snap
		w.mu.Unlock()
		p.log.Info("warm start: using the snapshot on disk from the first guest", "dir", dir, "image", want.Image, "created", snap.man.Created,
			"check_time", time.Since(begin).Round(time.Millisecond))
	case why != "":
		p.log.Warn("warm start: the snapshot on disk cannot be used; guests boot cold until a new one is made", "dir", dir, "reason", why)
		if err := os.RemoveAll(dir); err != nil {
			p.log.Warn("removing an unusable snapshot", "dir", dir, "err", err)
		}
	}
}

// dropSnapshot forgets snap (if it is still current) and removes its files, so that
// the next guest boots cold and a new snapshot is built after RetryInterval.
func (p *pool) dropSnapshot(snap *snapshot, why error) {
	w := &p.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snap != snap {
		return
	}
	w.snap = nil
	w.nextTry = time.Now().Add(p.m.cfg.RetryInterval)
	p.log.Warn("warm start: snapshot dropped; booting cold until it is rebuilt", "err", why, "rebuild_after", p.m.cfg.RetryInterval)
	if err := os.RemoveAll(snap.dir); err != nil {
		p.log.Warn("removing a dropped snapshot", "dir", snap.dir, "err", err)
	}
}

// snapshotDir is the pool's directory under Config.SnapshotDir.
func (p *pool) snapshotDir() string { return filepath.Join(p.m.cfg.SnapshotDir, p.cfg.Name) }

// buildSnapshot loads the pool's snapshot from disk when its manifest matches, or makes
// a new one from a template guest. Either way, it records the result in p.warm.
func (p *pool) buildSnapshot(img images.Image) {
	ctx := p.runCtx()
	snap, err := p.loadOrMake(ctx, img)
	w := &p.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	w.building = false
	if err != nil {
		w.nextTry = time.Now().Add(p.m.cfg.RetryInterval)
		if ctx.Err() == nil {
			p.log.Warn("warm start: no snapshot; guests boot cold", "err", err, "retry_after", p.m.cfg.RetryInterval)
		}
		return
	}
	w.snap, w.warned = snap, ""
	p.nudge()
}

func (p *pool) runCtx() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ctx
}

func (p *pool) loadOrMake(ctx context.Context, img images.Image) (*snapshot, error) {
	want, err := p.wantManifest(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("reading what a snapshot must match: %w", err)
	}
	dir := p.snapshotDir()
	if snap, why := loadSnapshot(dir, want); snap != nil {
		p.log.Info("warm start: using the snapshot on disk", "dir", dir, "image", want.Image, "created", snap.man.Created)
		return snap, nil
	} else if why != "" {
		p.log.Warn("warm start: the snapshot on disk cannot be used; making a new one", "dir", dir, "reason", why)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing snapshot directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating snapshot directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // QEMU reads the template's disk here
		return nil, fmt.Errorf("making snapshot directory %s reachable by QEMU: %w", dir, err)
	}
	man, err := p.makeSnapshot(ctx, img, dir, want)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &snapshot{dir: dir, man: man}, nil
}

// loadSnapshot returns the snapshot in dir when its manifest matches want and its state
// file has the recorded size and checksum; otherwise nil and why ("" when dir holds
// no snapshot at all).
func loadSnapshot(dir string, want snapshotManifest) (*snapshot, string) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	var m snapshotManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Sprintf("manifest %s: %v", filepath.Join(dir, manifestFile), err)
	}
	if why := m.mismatch(want); why != "" {
		return nil, why
	}
	s := &snapshot{dir: dir, man: m}
	if why := checkState(s.state(), m.StateSize, m.StateSHA); why != "" {
		return nil, why
	}
	if m.Disk != "" {
		if _, err := os.Stat(filepath.Join(dir, m.Disk)); err != nil {
			return nil, "template disk: " + err.Error()
		}
	}
	return s, ""
}

// checkState compares the state file with its recorded size and sha256.
func checkState(path string, size int64, sum string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Sprintf("reading %s: %v", path, err)
	}
	if n != size {
		return fmt.Sprintf("state file %s is %d bytes, the manifest says %d (truncated?)", path, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Sprintf("state file %s has sha256 %.12s, the manifest says %.12s (corrupt)", path, got, sum)
	}
	return ""
}

// makeSnapshot boots a template guest, waits for its ready line, saves its state into
// dir and writes the manifest last.
func (p *pool) makeSnapshot(ctx context.Context, img images.Image, dir string, man snapshotManifest) (snapshotManifest, error) {
	begin := time.Now()
	name := p.m.hv.Prefix() + p.cfg.Name + "-tmpl" + randID()[:4]
	g := &guest{ref: GuestRef{HostID: p.m.cfg.HostID, Pool: p.cfg.Name, Name: name}, dir: filepath.Join(p.m.cfg.RunDir, name)}
	g.ref.Socket = filepath.Join(g.dir, socketName)
	if !p.m.cfg.DisableShares {
		g.ref.InDir, g.ref.OutDir = filepath.Join(g.dir, inShareName), filepath.Join(g.dir, outShareName)
	}
	defer func() {
		if err := os.RemoveAll(g.dir); err != nil {
			p.log.Warn("removing the template's directory", "dir", g.dir, "err", err)
		}
	}()
	spec, err := p.guestSpec(ctx, g, img, "")
	if err != nil {
		return man, fmt.Errorf("template %s: %w", name, err)
	}
	if g.scratch != nil { // the template's disk stays as the clones' backing file
		man.Disk = filepath.Base(g.scratch.Path)
		if err := os.Rename(g.scratch.Path, filepath.Join(dir, man.Disk)); err != nil {
			return man, fmt.Errorf("template %s: moving its disk into %s: %w", name, dir, err)
		}
		spec.Disks[0].Path = filepath.Join(dir, man.Disk)
	}
	spec.Cmdline += " " + agent.CmdlineWarmKey + "=1"
	man.Template = spec.Cmdline
	// Not a pool guest: the pool's reconcile must not count or destroy it; cleanup of
	// a previous run's leftovers still finds it by host label.
	spec.Labels = map[string]string{LabelHost: p.m.cfg.HostID, LabelTemplate: p.cfg.Name}
	// The template's boot is a start like any guest's, but goes ahead of the guests
	// waiting for a slot: every guest that starts after the save is restored.
	release, err := p.m.starts.acquire(ctx, true)
	if err != nil {
		return man, fmt.Errorf("template %s: waiting for a start slot: %w", name, err)
	}
	defer release()
	sn := p.snapshotter()
	p.log.Info("warm start: booting a template guest", "guest", name)
	if _, err := sn.CreateTemplate(ctx, spec); err != nil {
		return man, fmt.Errorf("template %s: %w", name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.m.hv.Destroy(dctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			p.log.Error("destroying the template guest", "guest", name, "err", err)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, p.cfg.BootTimeout)
	conn, _, err := p.m.connector.WaitReady(rctx, g.ref)
	cancel()
	if err != nil {
		return man, fmt.Errorf("template %s: %w; its console ended with %q", name, err, consoleTail(spec.ConsoleLog, 1024))
	}
	defer conn.Close()
	state := filepath.Join(dir, stateFile)
	if err := sn.SaveState(ctx, name, state); err != nil {
		return man, fmt.Errorf("template %s: %w", name, err)
	}
	fi, err := os.Stat(state)
	if err != nil {
		return man, err
	}
	sum, err := fileSHA256(state)
	if err != nil {
		return man, err
	}
	man.StateSize, man.StateSHA = fi.Size(), sum
	man.Created, man.BuildMS = time.Now().UTC().Format(time.RFC3339), time.Since(begin).Milliseconds()
	b, _ := json.MarshalIndent(man, "", "  ")
	tmp := filepath.Join(dir, manifestFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return man, fmt.Errorf("writing snapshot manifest: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, manifestFile)); err != nil {
		return man, fmt.Errorf("writing snapshot manifest: %w", err)
	}
	p.log.Info("warm start: snapshot saved", "dir", dir, "state_bytes", man.StateSize, "build_time", time.Since(begin).Round(time.Millisecond))
	return man, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// start creates g: restored from the pool's snapshot when there is one (returning the
// identity to hand it and the snapshot), else booted cold. A restore that fails drops
// the snapshot and falls back to a cold boot.
func (p *pool) start(ctx context.Context, g *guest, img images.Image) (*agent.Identity, *snapshot, error) {
	snap := p.warmSnapshot(img)
	if snap == nil {
		return nil, nil, p.create(ctx, g, img)
	}
	id, err := p.restore(ctx, g, img, snap)
	if err == nil {
		return id, snap, nil
	}
	if ctx.Err() != nil {
		return nil, nil, err
	}
	p.dropSnapshot(snap, err)
	p.cleanGuestFiles(g)
	old := p.renameGuest(g)
	p.log.Warn("warm start: restore failed; booting this guest cold", "guest", old, "cold_guest", g.ref.Name, "err", err)
	return nil, nil, p.create(ctx, g, img)
}

// renameGuest gives g a fresh name and directory (and ends its restoring state), so that
// late events of the failed restore's domain cannot touch the cold boot that replaces
// it. It returns the old name.
func (p *pool) renameGuest(g *guest) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := g.ref.Name
	name := p.m.hv.Prefix() + p.cfg.Name + "-" + randID()
	delete(p.guests, old)
	g.ref.Name, g.dir = name, filepath.Join(p.m.cfg.RunDir, name)
	g.ref.Socket = filepath.Join(g.dir, socketName)
	if g.ref.InDir != "" {
		g.ref.InDir, g.ref.OutDir = filepath.Join(g.dir, inShareName), filepath.Join(g.dir, outShareName)
	}
	g.restoring = false
	p.guests[name] = g
	return old
}

// restore starts g from snap.
func (p *pool) restore(ctx context.Context, g *guest, img images.Image, snap *snapshot) (*agent.Identity, error) {
	if _, ok := p.m.connector.(IdentityConnector); !ok {
		return nil, errors.New("the connector cannot hand a restored guest its identity")
	}
	if why := checkSize(snap.state(), snap.man.StateSize); why != "" {
		return nil, errors.New(why)
	}
	base := ""
	if snap.man.Disk != "" {
		base = filepath.Join(snap.dir, snap.man.Disk)
	}
	spec, err := p.guestSpec(ctx, g, img, base)
	if err != nil {
		return nil, err
	}
	spec.Cmdline = snap.man.Template
	id, err := agent.NewIdentity(g.ref.Name)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	g.restoring = true
	p.mu.Unlock()
	if _, err := p.snapshotter().Restore(ctx, spec, snap.state()); err != nil {
		return nil, err // start renames g, which ends restoring
	}
	p.mu.Lock()
	g.created, g.createdAt, g.restoring = true, time.Now(), false
	p.mu.Unlock()
	return &id, nil
}

func checkSize(path string, size int64) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	if fi.Size() != size {
		return fmt.Sprintf("state file %s is %d bytes, the manifest says %d (truncated?)", path, fi.Size(), size)
	}
	return ""
}

// cleanGuestFiles removes what guestSpec made for g, before a cold retry.
func (p *pool) cleanGuestFiles(g *guest) {
	p.mu.Lock()
	s := g.scratch
	g.scratch = nil
	p.mu.Unlock()
	if s != nil {
		if err := s.Remove(); err != nil {
			p.log.Warn("removing scratch disk", "guest", g.ref.Name, "err", err)
		}
	}
	if err := os.RemoveAll(g.dir); err != nil {
		p.log.Warn("removing guest directory", "guest", g.ref.Name, "err", err)
	}
}

// RestoreReadyTimeout bounds restore → ready line for a guest restored from a snapshot
// (at most the pool's boot_timeout): the agent only has to read its identity.
var RestoreReadyTimeout = time.Minute

func (p *pool) readyTimeout(snap *snapshot) time.Duration {
	if snap != nil {
		return min(RestoreReadyTimeout, p.cfg.BootTimeout)
	}
	return p.cfg.BootTimeout
}

// waitReady waits for g's ready line (handing it ident first when it was restored). A
// restored guest that does not answer drops the snapshot, so its replacement boots cold.
func (p *pool) waitReady(ctx context.Context, g *guest, ident *agent.Identity, snap *snapshot) (net.Conn, ReadyInfo, error) {
	d := p.readyTimeout(snap)
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		conn net.Conn
		info ReadyInfo
		err  error
	)
	if ident != nil {
		conn, info, err = p.m.connector.(IdentityConnector).WaitReadyAs(rctx, g.ref, *ident)
	} else {
		conn, info, err = p.m.connector.WaitReady(rctx, g.ref)
	}
	if err == nil || ctx.Err() != nil {
		return conn, info, err
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) { // the timeout, not the guest, ended the wait
		limit := fmt.Sprintf("boot_timeout %v", d)
		if snap != nil {
			limit = fmt.Sprintf("%v of its restore (RestoreReadyTimeout, at most boot_timeout)", d)
		}
		err = fmt.Errorf("no ready line within %s: %w", limit, err)
	} else {
		err = fmt.Errorf("the guest's channel ended before its ready line (the guest died or was destroyed while booting; its console log says why): %w", err)
	}
	if snap != nil {
		err = fmt.Errorf("restored from the snapshot: %w", err)
		p.dropSnapshot(snap, err)
	}
	return nil, ReadyInfo{}, err
}

// LabelTemplate marks a pool's template guest (its value is the pool's name). A
// template carries LabelHost but not LabelPool: pools neither count nor adopt it, and
// the next start of the host daemon destroys it if it was left behind.
const LabelTemplate = "paddock.dev/template"

// snapshotStatus is PoolStatus.Snapshot.
func (p *pool) snapshotStatus() string {
	if p.cfg.WarmStart != WarmSnapshot {
		return ""
	}
	w := &p.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.snap != nil:
		return "ready"
	case w.building:
		return "building"
	}
	return "none"
}

// consoleTail returns the last n bytes of a console log ("" when unreadable).
func consoleTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}
