package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/paddockvm/paddock/plugins/sdk"
)

// JournalEnv names the journal file.
const JournalEnv = "PADDOCK_CHAOS_JOURNAL"

type handler struct{ journal *os.File }

func (handler) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "chaos.run", Version: "1.0.0", Concurrency: 4, Description: "chaos test: sleep, journalled"}}
}

// note appends one line with one write (O_APPEND: lines of concurrent writers do not mix).
func (h handler) note(what string, req sdk.Request) error {
	_, err := fmt.Fprintf(h.journal, "%s %s %d %d %d\n", what, req.TaskID, req.Attempt, os.Getpid(), time.Now().UnixNano())
	return err
}

func (h handler) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	d, err := time.ParseDuration(string(req.Payload))
	if err != nil {
		return sdk.Response{}, sdk.Fatalf("chaos.run: payload %q is not a duration like \"40ms\"", req.Payload)
	}
	if err := h.note("start", req); err != nil {
		return sdk.Response{}, sdk.Retryablef("chaos.run: writing the journal: %v", err)
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return sdk.Response{}, ctx.Err()
	}
	if err := h.note("done", req); err != nil {
		return sdk.Response{}, sdk.Retryablef("chaos.run: writing the journal: %v", err)
	}
	return sdk.Response{Output: []byte(fmt.Sprintf("%s attempt %d pid %d", req.TaskID, req.Attempt, os.Getpid()))}, nil
}

func main() {
	path := os.Getenv(JournalEnv)
	if path == "" {
		fmt.Fprintf(os.Stderr, "journalhandler: set %s to the journal file\n", JournalEnv)
		os.Exit(2)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "journalhandler: opening the journal: %v\n", err)
		os.Exit(1)
	}
	sdk.Serve(handler{journal: f})
}
