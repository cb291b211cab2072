package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notify listens on NotifyChannel and sends the type of every task that a store with
// Options.Notify queued (created, or requeued for a retry), on any server, until ctx
// ends; then it closes the channel. Types are sent in commit order; when the channel
// is full a wake-up is dropped, and after the listening connection was lost (and
// again established) it sends "": wake-ups may have been missed, look at every type.
// Callers keep a slow poll as well: Notify only shortens the wait.
func (s *Store) Notify(ctx context.Context) <-chan string {
	ch := make(chan string, 256)
	go s.listen(ctx, ch)
	return ch
}

func (s *Store) listen(ctx context.Context, ch chan<- string) {
	defer close(ch)
	cfg := s.pool.Config().ConnConfig
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN "+NotifyChannel); err == nil {
				wait = 100 * time.Millisecond
				if !first {
					send(ch, "")
				}
				for {
					n, err := conn.WaitForNotification(ctx)
					if err != nil {
						break
					}
					send(ch, n.Payload)
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
