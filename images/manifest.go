package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
)

// SchemaVersion is the manifest format version. Version 2 added the task types each
// handler serves (Binary.Types); readers that need them refuse older manifests and ask
// for a rebuild (the handler names alone do not say which task types an image serves).
const SchemaVersion = 2

// Manifest describes an image. The store keeps it as <store>/<digest>/manifest.json; the
// initramfs carries a copy without Kernel, Initramfs and Digest (which depend on the
// initramfs itself) at /etc/paddock/manifest.json for the agent (agent.Manifest).
//
// Digest is the SHA-256 of the manifest's JSON encoding with Digest empty. Since the
// manifest records the SHA-256 of the kernel and the initramfs (which holds every
// other file), the digest names the whole image. The manifest holds no time stamps or
// host paths, so the same inputs give the same digest.
type Manifest struct {
	Schema        int    `json:"schema"`
	Digest        string `json:"digest,omitempty"`
	KernelVersion string `json:"kernel_version"`
	// Kernel and Initramfs are the files in the image directory.
	Kernel    *File `json:"kernel,omitempty"`
	Initramfs *File `json:"initramfs,omitempty"`
	// Agent is /init.
	Agent Binary `json:"agent"`
	// Modules are in load order: every module after its dependencies.
	Modules  []Module `json:"modules"`
	Handlers []Binary `json:"handlers"`
	// HandlerDisk is the read-only filesystem image that holds the handler binaries
	// (handlerdisk.go); nil when the image has no handlers, and in images built before
	// handler disks (their handlers are packed in the initramfs: Binary.Packed).
	HandlerDisk *HandlerDisk `json:"handler_disk,omitempty"`
	// Config is the agent's configuration file in the guest.
	Config File `json:"config"`
}

// File is one file's name (in the image directory) or path (in the guest), size and
// SHA-256 (hex).
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Binary is an executable in the guest.
type Binary struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Version string `json:"version,omitempty"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	// Packed is, for a handler of an image built before handler disks (builder 3),
	// where its initramfs holds the binary zstd-compressed (Path + ".zst"; gzip,
	// Path + ".gz", before 2026-12-02): that image's agent unpacks it to Path when the
	// handler first starts. Size and SHA256 are the unpacked binary's. Empty for the
	// agent, in images with a HandlerDisk (the binary is at Path on the disk) and in
	// older images.
	Packed string `json:"packed,omitempty"`
	// Types are the task types a handler serves, sorted by name, as the handler itself
	// answered when the build started it once (Describe). Empty for the agent.
	Types []TaskType `json:"types,omitempty"`
}

// TaskType is one task type a handler serves.
type TaskType struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Concurrency is the handler's suggested number of concurrent tasks of this type
	// (0: no suggestion).
	Concurrency int `json:"concurrency"`
}

// TaskTypes returns the names of every task type the image's handlers serve, sorted.
func (m Manifest) TaskTypes() []string {
	var out []string
	for _, h := range m.Handlers {
		for _, t := range h.Types {
			out = append(out, t.Name)
		}
	}
	sort.Strings(out)
	return out
}

// HandlerFor returns the name of the handler serving taskType, and whether one does.
func (m Manifest) HandlerFor(taskType string) (string, bool) {
	for _, h := range m.Handlers {
		for _, t := range h.Types {
			if t.Name == taskType {
				return h.Name, true
			}
		}
	}
	return "", false
}

// Module is a kernel module in the guest, stored uncompressed.
type Module struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ComputeDigest returns the SHA-256 (hex) of m's JSON encoding with Digest empty.
func (m Manifest) ComputeDigest() (string, error) {
	m.Digest = ""
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encoding manifest: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// guest returns the copy of m the initramfs carries.
func (m Manifest) guest() Manifest {
	m.Digest, m.Kernel, m.Initramfs = "", nil, nil
	return m
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
