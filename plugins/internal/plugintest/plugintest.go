package plugintest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binary is a built handler.
type Binary struct {
	Name   string
	Path   string
	SHA256 string
}

// Build compiles plugins/handlers/<name> for each name into dir
// (CGO_ENABLED=0, as in a guest image). Run it from inside the module (tests do).
func Build(dir string, names ...string) (map[string]Binary, error) {
	out := map[string]Binary{}
	for _, n := range names {
		path := filepath.Join(dir, n)
		cmd := exec.Command("go", "build", "-o", path, "github.com/paddockvm/paddock/plugins/handlers/"+n)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building handler %s: %v\n%s", n, err, b)
		}
		sum, err := fileSHA256(path)
		if err != nil {
			return nil, err
		}
		out[n] = Binary{Name: n, Path: path, SHA256: sum}
	}
	return out, nil
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}
