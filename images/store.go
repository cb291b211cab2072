package images

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
)

// File names inside an image directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio.gz"
	ManifestFile  = "manifest.json"
)

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Store is a directory of content-addressed images: <dir>/<digest>/ holds vmlinuz,
// initramfs.cpio.gz, manifest.json and, with handlers, handlers.erofs. <dir>/.keys maps a hash of a build's inputs to
// the digest it produced (the build cache); <dir>/.tmp holds builds in progress, each
// renamed into place when complete, so readers and concurrent builders never see a
// partial image. A Store is safe for concurrent use, also by several processes.
type Store struct {
	dir string
	// builds counts builds that did the work (not cache hits); for tests.
	builds atomic.Int64
}

// Image is an image in a store.
type Image struct {
	Digest   string
	Dir      string
	Manifest Manifest
	// Cached is set by Build when the image came from the cache without any work.
	Cached bool
}

// Kernel returns the path of the image's kernel.
func (i Image) Kernel() string { return filepath.Join(i.Dir, KernelFile) }

// Initrd returns the path of the image's initramfs.
func (i Image) Initrd() string { return filepath.Join(i.Dir, InitramfsFile) }

// Size returns the bytes of the kernel, the initramfs and the handler disk.
func (i Image) Size() int64 {
	var n int64
	if k := i.Manifest.Kernel; k != nil {
		n += k.Size
	}
	if r := i.Manifest.Initramfs; r != nil {
		n += r.Size
	}
	if d := i.Manifest.HandlerDisk; d != nil {
		n += d.Size
	}
	return n
}

// Open returns the store in dir, creating it (mode 0755, so that QEMU, which runs as
// its own user, can read the kernels and initramfs files) when missing.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: image store directory is empty: set images.dir", ErrInvalid)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", dir, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, ".keys"), filepath.Join(abs, ".tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating image store %s: %w", d, err)
		}
	}
	return &Store{dir: abs}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// load reads the image with a full digest.
func (s *Store) load(digest string) (Image, error) {
	dir := filepath.Join(s.dir, digest)
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("%w: %s in %s", ErrNotFound, digest, s.dir)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", digest, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Image{}, fmt.Errorf("decoding %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Digest != digest {
		return Image{}, fmt.Errorf("image %s: manifest names digest %q: the store is damaged; remove the directory", dir, m.Digest)
	}
	return Image{Digest: digest, Dir: dir, Manifest: m}, nil
}

// List returns the images in the store, sorted by digest.
func (s *Store) List() ([]Image, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing image store %s: %w", s.dir, err)
	}
	var out []Image
	for _, e := range ents {
		if !e.IsDir() || !digestRE.MatchString(e.Name()) {
			continue
		}
		img, err := s.load(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// Get returns the image whose digest is ref or starts with ref (at least 4 hex digits;
// "sha256:" in front is accepted). No match wraps ErrNotFound; several matches is an
// error listing them.
func (s *Store) Get(ref string) (Image, error) {
	ref = strings.TrimPrefix(strings.ToLower(ref), "sha256:")
	if len(ref) < 4 || strings.Trim(ref, "0123456789abcdef") != "" {
		return Image{}, fmt.Errorf("%w: image reference %q: give at least 4 hex digits of a digest (see paddock image ls)", ErrInvalid, ref)
	}
	if digestRE.MatchString(ref) {
		return s.load(ref)
	}
	imgs, err := s.List()
	if err != nil {
		return Image{}, err
	}
	var found []Image
	for _, i := range imgs {
		if strings.HasPrefix(i.Digest, ref) {
			found = append(found, i)
		}
	}
	switch len(found) {
	case 0:
		return Image{}, fmt.Errorf("%w: no image %s… in %s", ErrNotFound, ref, s.dir)
	case 1:
		return found[0], nil
	}
	var ds []string
	for _, i := range found {
		ds = append(ds, i.Digest[:16])
	}
	return Image{}, fmt.Errorf("image reference %q is ambiguous: it matches %s; give more digits", ref, strings.Join(ds, ", "))
}

// Remove deletes the image ref names (see Get) and returns it. The directory is first
// renamed away, so a concurrent reader sees either the whole image or none.
func (s *Store) Remove(ref string) (Image, error) {
	img, err := s.Get(ref)
	if err != nil {
		return Image{}, err
	}
	tmp := filepath.Join(s.dir, ".tmp", "rm-"+img.Digest+"-"+randHex())
	if err := os.Rename(img.Dir, tmp); err != nil {
		return Image{}, fmt.Errorf("removing image %s: %w", img.Digest, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return Image{}, fmt.Errorf("removing image %s: %w", img.Digest, err)
	}
	// Cache keys that point at it now miss and are rewritten by the next build.
	return img, nil
}

func randHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp-" + randHex()
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// hashFile returns the SHA-256 (hex) and size of the file at path.
func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := bufio.NewReader(f).WriteTo(h)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
