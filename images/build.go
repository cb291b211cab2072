package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/images/kmod"
)

// builderVersion changes whenever the builder would lay out the same inputs
// differently; it is part of the cache key.
const builderVersion = "paddock-images/4"

// Event reports build progress.
type Event struct {
	// Step is one of "check", "kernel", "modules", "agent", "handlers", "handler-disk",
	// "initramfs", "store", "cached".
	Step string
	// Detail names the file or module being handled.
	Detail string
	// Done and Total count items within the step (0, 0 when it has none).
	Done, Total int
}

// Option adjusts a build.
type Option func(*buildOpts)

type buildOpts struct{ progress func(Event) }

// WithProgress calls fn (from the building goroutine) as the build advances.
func WithProgress(fn func(Event)) Option { return func(o *buildOpts) { o.progress = fn } }

// Build builds the image spec describes into the store and returns it.
//
// Every handler is started once on this host through plugins/runner (as the agent
// starts it in the guest) and asked which task types it serves; the manifest records
// them per handler. A handler that does not start or describe itself, or two handlers
// serving the same task type, fail the build with ErrInvalid naming the files.
//
// The build is keyed on a hash of its inputs: the spec, and the path, size,
// modification and change times, inode and device of the kernel, modules.dep, the
// agent and each handler. When an image for that key exists, Build returns it with
// Cached set and reads no file content. Otherwise it writes the kernel, the initramfs
// and the manifest into a temporary directory and renames it to <store>/<digest>; if a
// concurrent build got there first, its (identical) result is kept.
func (s *Store) Build(ctx context.Context, spec Spec, opts ...Option) (Image, error) {
	var o buildOpts
	for _, opt := range opts {
		opt(&o)
	}
	report := func(e Event) {
		if o.progress != nil {
			o.progress(e)
		}
	}
	report(Event{Step: "check"})
	kernel, kver, modDir, err := kernelFor(spec)
	if err != nil {
		return Image{}, err
	}
	key, keyErr := inputKey(spec, kernel, kver, modDir)
	if keyErr == nil {
		if img, ok := s.cached(key); ok {
			report(Event{Step: "cached", Detail: img.Digest})
			return img, nil
		}
	}
	if err := checkSpec(spec); err != nil {
		return Image{}, err
	}
	if len(spec.Handlers) > 0 {
		if _, err := lookMkfsErofs(); err != nil {
			return Image{}, err
		}
	}
	if keyErr != nil {
		return Image{}, fmt.Errorf("hashing build inputs: %w", keyErr)
	}
	s.builds.Add(1)

	tmp, err := os.MkdirTemp(filepath.Join(s.dir, ".tmp"), "build-")
	if err != nil {
		return Image{}, fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Image{}, err
	}
	m := Manifest{Schema: SchemaVersion, KernelVersion: kver}

	// Kernel.
	report(Event{Step: "kernel", Detail: kernel})
	kdata, err := os.ReadFile(kernel)
	if err != nil {
		return Image{}, fmt.Errorf("reading kernel %s: %w", kernel, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, KernelFile), kdata, 0o644); err != nil {
		return Image{}, fmt.Errorf("copying kernel: %w", err)
	}
	m.Kernel = &File{Path: KernelFile, Size: int64(len(kdata)), SHA256: sha(kdata)}

	ar := archive{}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/etc/paddock", GuestHandlersDir} {
		ar.dir(d, 0o755)
	}
	ar.dir("/tmp", 0o1777)

	// Modules, in load order, stored uncompressed.
	names := append([]string{}, kmod.DefaultGuestModules...)
	if len(spec.Handlers) > 0 {
		names = append(names, HandlerDiskModules...)
	}
	names = append(names, spec.Modules...)
	mods, err := kmod.Resolve(modDir, names...)
	if err != nil {
		return Image{}, fmt.Errorf("%w: resolving kernel modules for %s: %v", ErrInvalid, kernel, err)
	}
	for i, mod := range mods {
		if err := ctx.Err(); err != nil {
			return Image{}, err
		}
		report(Event{Step: "modules", Detail: mod.Name, Done: i, Total: len(mods)})
		data, ext, err := readModule(ctx, mod.Path)
		if err != nil {
			return Image{}, err
		}
		guest := "/lib/modules/" + kver + "/" + strings.TrimSuffix(mod.RelPath, ext)
		ar.file(guest, data, 0o644)
		m.Modules = append(m.Modules, Module{Name: mod.Name, Path: guest, Size: int64(len(data)), SHA256: sha(data)})
	}

	// Agent as /init.
	report(Event{Step: "agent", Detail: spec.Agent})
	adata, err := os.ReadFile(spec.Agent)
	if err != nil {
		return Image{}, fmt.Errorf("reading agent %s: %w", spec.Agent, err)
	}
	av := spec.AgentVersion
	if av == "" {
		av = goVersion(spec.Agent)
	}
	ar.file(GuestInit, adata, 0o755)
	m.Agent = Binary{Name: "paddock-agent", Path: GuestInit, Version: av, Size: int64(len(adata)), SHA256: sha(adata)}

	// Handlers, each started once to ask which task types it serves.
	m.Handlers = []Binary{}
	served := map[string]Handler{}
	var disk []diskFile // the handler disk's files
	for i, h := range spec.Handlers {
		report(Event{Step: "handlers", Detail: h.Name, Done: i, Total: len(spec.Handlers)})
		data, err := os.ReadFile(h.Path)
		if err != nil {
			return Image{}, fmt.Errorf("reading handler %q %s: %w", h.Name, h.Path, err)
		}
		v := h.Version
		if v == "" {
			v = goVersion(h.Path)
		}
		sum := sha(data)
		types, err := describe(ctx, h.Name, h.Path, sum)
		if err != nil {
			return Image{}, err
		}
		for _, t := range types {
			if other, dup := served[t.Name]; dup {
				return Image{}, invalid("task type %q is served by both handler %q (%s) and handler %q (%s): the agent would refuse to start; leave one of them out",
					t.Name, other.Name, other.Path, h.Name, h.Path)
			}
			served[t.Name] = h
		}
		disk = append(disk, diskFile{name: h.Name, data: data})
		m.Handlers = append(m.Handlers, Binary{Name: h.Name, Path: GuestHandlersDir + "/" + h.Name, Version: v, Size: int64(len(data)), SHA256: sum, Types: types})
	}
	if len(disk) > 0 {
		report(Event{Step: "handler-disk", Detail: HandlerDiskFile})
		p := filepath.Join(tmp, HandlerDiskFile)
		if err := writeHandlerDisk(ctx, p, disk); err != nil {
			return Image{}, err
		}
		sum, n, err := hashFile(p)
		if err != nil {
			return Image{}, fmt.Errorf("hashing the handler disk: %w", err)
		}
		m.HandlerDisk = &HandlerDisk{File: File{Path: HandlerDiskFile, Size: n, SHA256: sum},
			FSType: HandlerDiskFSType, Serial: HandlerDiskSerial, Mount: GuestHandlersDir}
		disk = nil
	}

	// Agent config and the guest's manifest.
	cfg := []byte("{}")
	if len(bytes.TrimSpace(spec.AgentConfig)) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, spec.AgentConfig); err != nil {
			return Image{}, fmt.Errorf("%w: agent config: %v", ErrInvalid, err)
		}
		cfg = buf.Bytes()
	}
	cfg = append(cfg, '\n')
	ar.file(agent.ConfigPath, cfg, 0o644)
	m.Config = File{Path: agent.ConfigPath, Size: int64(len(cfg)), SHA256: sha(cfg)}
	gm, err := json.MarshalIndent(m.guest(), "", "  ")
	if err != nil {
		return Image{}, fmt.Errorf("encoding guest manifest: %w", err)
	}
	ar.file(agent.ManifestPath, append(gm, '\n'), 0o644)

	// The initramfs.
	report(Event{Step: "initramfs", Detail: InitramfsFile})
	f, err := os.OpenFile(filepath.Join(tmp, InitramfsFile), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		return Image{}, fmt.Errorf("creating initramfs: %w", err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = ar.write(cw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Image{}, fmt.Errorf("writing initramfs: %w", err)
	}
	m.Initramfs = &File{Path: InitramfsFile, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}

	// Manifest, digest, and into the store.
	report(Event{Step: "store"})
	if m.Digest, err = m.ComputeDigest(); err != nil {
		return Image{}, err
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Image{}, fmt.Errorf("encoding manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ManifestFile), append(mb, '\n'), 0o644); err != nil {
		return Image{}, fmt.Errorf("writing manifest: %w", err)
	}
	final := filepath.Join(s.dir, m.Digest)
	if err := os.Rename(tmp, final); err != nil {
		// A concurrent build of the same inputs won the race (ENOTEMPTY/EEXIST): its
		// image has the same digest and so the same bytes.
		if _, serr := os.Stat(filepath.Join(final, ManifestFile)); serr != nil {
			return Image{}, fmt.Errorf("moving image %s into the store: %w", m.Digest, err)
		}
	}
	if err := writeFileAtomic(filepath.Join(s.dir, ".keys", key), []byte(m.Digest+"\n"), 0o644); err != nil {
		return Image{}, fmt.Errorf("recording build cache key: %w", err)
	}
	return Image{Digest: m.Digest, Dir: final, Manifest: m}, nil
}

// cached returns the image recorded for key, if it is still in the store.
func (s *Store) cached(key string) (Image, bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, ".keys", key))
	if err != nil {
		return Image{}, false
	}
	d := strings.TrimSpace(string(b))
	if !digestRE.MatchString(d) {
		return Image{}, false
	}
	img, err := s.load(d)
	if err != nil || img.Manifest.Schema != SchemaVersion {
		return Image{}, false // gone, or built by an older builder: build again
	}
	img.Cached = true
	return img, true
}

// inputKey hashes the spec and the identity (path, size, times, inode) of every input
// file. It reads no file content: a content change updates the change time.
func inputKey(spec Spec, kernel, kver, modDir string) (string, error) {
	type fileID struct {
		Path                        string
		Size, MtimeNs, CtimeNs, Ino int64
		Dev                         uint64
		Mode                        uint32
	}
	id := func(p string) (fileID, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return fileID{}, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fileID{}, errors.New("no stat_t")
		}
		abs, _ := filepath.Abs(p)
		return fileID{abs, fi.Size(), fi.ModTime().UnixNano(), st.Ctim.Nano(), int64(st.Ino), uint64(st.Dev), uint32(fi.Mode())}, nil
	}
	in := struct {
		Builder, KernelVersion string
		Spec                   Spec
		Files                  []fileID
		Default                []string
	}{Builder: builderVersion, KernelVersion: kver, Spec: spec, Default: kmod.DefaultGuestModules}
	paths := []string{kernel, filepath.Join(modDir, "modules.dep"), spec.Agent}
	for _, h := range spec.Handlers {
		paths = append(paths, h.Path)
	}
	for _, p := range paths {
		f, err := id(p)
		if err != nil {
			return "", err
		}
		in.Files = append(in.Files, f)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return "", err
	}
	return sha(b), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
