package guestabi

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
)

// Mount tags and guest mount points of the two shared directories.
const (
	// InTag is the mount tag of the read-only input share: the host stages each task's
	// input blobs there (hard links into its cache), the guest can only read them.
	InTag = "paddock.in"
	// OutTag is the mount tag of the writable output share: handlers write their
	// output files there and the host collects them.
	OutTag = "paddock.out"
	// InDir and OutDir are where the agent mounts them in the guest.
	InDir  = "/run/paddock/in"
	OutDir = "/run/paddock/out"
)

// MarkerName is the file the host writes (atomically: write a temporary name, then
// rename) into a lease's input directory when staging ends. The agent waits for it.
const MarkerName = ".paddock-staged"

// Marker is the content of MarkerName (JSON).
type Marker struct {
	// OK is true when every input is in place; Error says what failed otherwise.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Retryable says whether running the task again may help (a fetch that failed)
	// or not (a blob the server does not have).
	Retryable bool `json:"retryable,omitempty"`
	// Sizes maps each input name to the size of the staged file.
	Sizes map[string]int64 `json:"sizes,omitempty"`
}

// Encode returns m as JSON.
func (m Marker) Encode() []byte {
	b, _ := json.Marshal(m)
	return b
}

// DecodeMarker parses a marker file's content.
func DecodeMarker(b []byte) (Marker, error) {
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		return Marker{}, fmt.Errorf("staging marker: %w", err)
	}
	return m, nil
}

// LeaseDir is the directory of one assignment inside either share: "<task>.<lease>".
// The host and the agent both build paths with it, so both sides agree.
func LeaseDir(taskID string, leaseID uint64) string {
	return taskID + "." + strconv.FormatUint(leaseID, 10)
}

// nameRE has no counted repetition ({0,127} would compile to 128 copies of its class,
// about 100 KB of heap held by every process that links this package); ValidName
// checks the length.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*$`)

// ValidName reports whether name can be an input or output name: 1-128 letters,
// digits, '.', '_' or '-', not starting with '.' (so it is a plain file name that
// cannot collide with MarkerName or escape its directory).
func ValidName(name string) bool { return len(name) <= 128 && nameRE.MatchString(name) }

// NameRule says what ValidName accepts, for error messages.
const NameRule = "1-128 letters, digits, '.', '_' or '-', not starting with '.'"
