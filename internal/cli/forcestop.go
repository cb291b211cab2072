package cli

import (
	"context"
	"sync"
	"time"
)

// forceStops are the cleanups a command registers for a forced exit (a second SIGINT
// or SIGTERM while it is stopping): each must undo, quickly and without the command's
// goroutines, what would otherwise outlive the process — paddock dev's guests.
var forceStops struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(context.Context)
}

// onForceStop registers f for ForceStop and returns the function that unregisters it.
func onForceStop(f func(context.Context)) (remove func()) {
	forceStops.mu.Lock()
	defer forceStops.mu.Unlock()
	if forceStops.fns == nil {
		forceStops.fns = map[int]func(context.Context){}
	}
	id := forceStops.next
	forceStops.next++
	forceStops.fns[id] = f
	return func() {
		forceStops.mu.Lock()
		defer forceStops.mu.Unlock()
		delete(forceStops.fns, id)
	}
}

// ForceStop runs every registered forced-exit cleanup at once and waits for them, at
// most timeout. main calls it on the second signal, before exiting.
func ForceStop(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	forceStops.mu.Lock()
	fns := make([]func(context.Context), 0, len(forceStops.fns))
	for _, f := range forceStops.fns {
		fns = append(fns, f)
	}
	forceStops.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
