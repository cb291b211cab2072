package cli

import (
	"strings"
	"testing"
)

// TestTaskGetSaysWhyQueued: `task get` of a queued task says why it waits (here: no
// agent and no pool serves its type).
func TestTaskGetSaysWhyQueued(t *testing.T) {
	url, _, _ := testServer(t)
	task := submitJSON(t, url, "--type", "nobody.serves.this")
	id, _ := task["id"].(string)
	out, _ := mustRun(t, "task", "get", "--server", url, id)
	if !strings.Contains(out, "why:") || !strings.Contains(out, "no connected agent and no host pool serves type nobody.serves.this") {
		t.Errorf("task get of a task nobody serves:\n%s\nwant a why: line saying no agent or pool serves the type", out)
	}
}
