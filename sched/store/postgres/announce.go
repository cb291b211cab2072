package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// announcer sends the wake-ups of a store with Options.Notify (a task queued: its type
// on NotifyChannel; a cancel requested for a live task: its id on CancelChannel) after
// the changes commit, from one goroutine, many in one statement.
//
// Why not pg_notify inside the changing statement: PostgreSQL serialises the commits
// of every transaction that notifies (a lock held from before the WAL flush to the
// end of the commit), so every submit of every replica would commit one at a time, and
// group commit is lost. Sent apart, the task statements commit concurrently and one
// notifying commit carries every wake-up gathered while the previous one was sent
// (the same type twice in a batch is sent once). A wake-up is only a hint: lost with a
// crash between the change and its send, it is made up for by the servers' polls.
type announcer struct {
	s *Store

	mu      sync.Mutex // guards the fields below
	types   []string
	seen    map[string]bool
	cancels []string

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

func newAnnouncer(s *Store) *announcer {
	ctx, cancel := context.WithCancel(context.Background())
	a := &announcer{s: s, seen: map[string]bool{}, kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	go a.run(ctx)
	return a
}

// queued announces that a task of type typ was queued.
func (a *announcer) queued(typ string) {
	a.mu.Lock()
	if !a.seen[typ] {
		a.seen[typ] = true
		a.types = append(a.types, typ)
	}
	a.mu.Unlock()
	a.wake()
}

// cancel announces that a cancel of live task id was requested.
func (a *announcer) cancel(id string) {
	a.mu.Lock()
	a.cancels = append(a.cancels, id)
	a.mu.Unlock()
	a.wake()
}

func (a *announcer) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run sends what was gathered whenever something was, until ctx ends; then it sends
// what is left.
func (a *announcer) run(ctx context.Context) {
	defer close(a.done)
	for {
		select {
		case <-ctx.Done():
			a.flush(context.Background())
			return
		case <-a.kick:
		}
		a.flush(ctx)
	}
}

func (a *announcer) flush(ctx context.Context) {
	a.mu.Lock()
	types, cancels := a.types, a.cancels
	a.types, a.cancels = nil, nil
	clear(a.seen)
	a.mu.Unlock()
	if len(types)+len(cancels) == 0 {
		return
	}
	chans := make([]string, 0, len(types)+len(cancels))
	payloads := make([]string, 0, len(types)+len(cancels))
	for _, t := range types {
		chans, payloads = append(chans, NotifyChannel), append(payloads, t)
	}
	for _, id := range cancels {
		chans, payloads = append(chans, CancelChannel), append(payloads, id)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.s.pool.Exec(ctx, `SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(c, p, n) ORDER BY n`, chans, payloads); err != nil && ctx.Err() == nil {
		slog.Warn("postgres store: sending wake-ups to the other servers failed; they notice within their polls", "n", len(chans), "err", err)
	}
}

// close stops the announcer after sending what is left.
func (a *announcer) close() {
	a.stop()
	<-a.done
}
