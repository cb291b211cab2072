package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paddockvm/paddock/sched/store"
)

// CancelChannel is the LISTEN/NOTIFY channel on which the id of a leased or running
// task whose cancel was requested is sent (Options.Notify): the server replica that
// holds the task's agent forwards the cancel to it.
const CancelChannel = "paddock_task_cancel"

var _ store.Shared = (*Store)(nil)

// Notify listens on NotifyChannel and sends the type of every task that a store with
// Options.Notify queued (created, or requeued for a retry), on any server, until ctx
// ends; then it closes the channel. Types are sent in commit order; when the channel
// is full a wake-up is dropped, and after the listening connection was lost (and
// again established) it sends "": wake-ups may have been missed, look at every type.
// Callers keep a slow poll as well: Notify only shortens the wait.
func (s *Store) Notify(ctx context.Context) <-chan string {
	ch := make(chan string, 256)
	go func() {
		defer close(ch)
		s.listen(ctx, []string{NotifyChannel}, func(_, payload string, missed bool) {
			if missed {
				payload = ""
			}
			send(ch, payload)
		})
	}()
	return ch
}

// Wakeups implements store.Shared: the types queued (NotifyChannel) and the cancels
// requested (CancelChannel) by any server whose store has Options.Notify, on one
// listening connection. Without Options.Notify on this store it returns nil (the
// server then relies on its polls). A wake-up is dropped when the channel is full, so
// callers keep polling slowly.
func (s *Store) Wakeups(ctx context.Context) <-chan store.Wakeup {
	if s.notify == nil {
		return nil
	}
	ch := make(chan store.Wakeup, 1024)
	go func() {
		defer close(ch)
		s.listen(ctx, []string{NotifyChannel, CancelChannel}, func(channel, payload string, missed bool) {
			var w store.Wakeup
			switch {
			case missed:
				w.Missed = true
			case channel == CancelChannel:
				w.Cancel = payload
			default:
				w.Type = payload
			}
			select {
			case ch <- w:
			default:
			}
		})
	}()
	return ch
}

// listen LISTENs on channels and calls got for every notification, and with missed
// set after the connection was lost and established again, until ctx ends.
func (s *Store) listen(ctx context.Context, channels []string, got func(channel, payload string, missed bool)) {
	cfg := s.pool.Config().ConnConfig
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			for _, c := range channels {
				if _, err = conn.Exec(ctx, "LISTEN "+c); err != nil {
					break
				}
			}
			if err == nil {
				wait = 100 * time.Millisecond
				if !first {
					got("", "", true)
				}
				for {
					n, err := conn.WaitForNotification(ctx)
					if err != nil {
						break
					}
					got(n.Channel, n.Payload, false)
				}
			}
			conn.Close(context.Background())
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// send sends typ unless ch is full.
func send(ch chan<- string, typ string) {
	select {
	case ch <- typ:
	default:
	}
}
