package postgres

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paddockvm/paddock/sched/store"
)

// maxBatch bounds the writes committed together.
const maxBatch = 256

// errClosed answers the writes still waiting when the store closes.
var errClosed = errors.New("the store is closed")

// committer group-commits the store's writes (Create, Lease, Update, Renew): callers
// queue their statement and wait; a writer takes every statement waiting (up to
// maxBatch), sends them in one pgx batch (one round trip, one implicit transaction,
// one commit) and answers each caller only after that commit succeeded. If the server
// refuses the batch (one statement's error aborts the transaction, a deadlock with
// another server), nothing of it is kept and each statement is run again on its own,
// so that a caller gets exactly the answer it would have got alone. After an error that
// leaves it unknown whether the batch committed (a connection lost while waiting for
// the answer), every caller gets that error, as a single statement's caller would.
//
// Statements of a batch run in the order of the task they change (op.key), the merged
// ones (merge.go) first, so that servers' batches mostly lock rows in one order (a
// deadlock left is found by PostgreSQL and ends in the fallback above). Each statement
// keeps its own guard (the compare-and-swap on state and lease id, FOR UPDATE SKIP
// LOCKED), and a later statement of a batch sees the earlier ones' changes: a batch is
// equivalent to its statements run one after another, all of them concurrent calls.
type committer struct {
	pool *pgxpool.Pool
	ops  chan *writeOp
	ctx  context.Context // cancelled by close
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Op states: a caller that gives up abandons a pending op; a writer takes it.
const (
	opPending int32 = iota
	opTaken
	opAbandoned
)

// writeOp is one queued statement and, once done is signalled, its result.
type writeOp struct {
	q    string
	args []any
	key  string // the (first) task id the statement changes; "" for none in particular
	exec bool   // true: the result is the rows affected (n); false: the returned tasks

	// merge: ops of the same q may run as one statement (merge.go) if their uniq sets
	// are disjoint (the task id, an idempotency key); each returns at most the row
	// of its task, whose id is key.
	merge mergeKind
	uniq  []string

	state atomic.Int32
	done  chan error // buffered: a writer never waits for the caller

	tasks []store.Task // set by the writer before done
	n     int64
}

func newCommitter(pool *pgxpool.Pool, writers int) *committer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &committer{pool: pool, ops: make(chan *writeOp, 4*maxBatch), ctx: ctx, stop: cancel}
	for range writers {
		c.wg.Add(1)
		go c.loop()
	}
	return c
}

// close stops the writers and fails the writes still queued.
func (c *committer) close() {
	c.stop()
	c.wg.Wait()
	for {
		select {
		case op := <-c.ops:
			op.done <- errClosed
		default:
			return
		}
	}
}

// query queues q and returns the tasks it returned, once committed.
func (c *committer) query(ctx context.Context, key, q string, args ...any) ([]store.Task, error) {
	return c.queryOp(ctx, &writeOp{q: q, args: args, key: key})
}

// queryOp queues op and returns the tasks it returned, once committed.
func (c *committer) queryOp(ctx context.Context, op *writeOp) ([]store.Task, error) {
	if err := c.do(ctx, op); err != nil {
		return nil, err
	}
	return op.tasks, nil
}

// execute queues q and returns the rows it changed, once committed.
func (c *committer) execute(ctx context.Context, key, q string, args ...any) (int64, error) {
	op := &writeOp{q: q, args: args, key: key, exec: true}
	if err := c.do(ctx, op); err != nil {
		return 0, err
	}
	return op.n, nil
}

func (c *committer) do(ctx context.Context, op *writeOp) error {
	op.done = make(chan error, 1)
	if c.ctx.Err() != nil {
		return errClosed
	}
	select {
	case c.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return errClosed
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		// Not yet taken: it will not run. Taken: it may still commit, as a statement
		// cancelled in flight may; either way the caller is not told it succeeded.
		op.state.CompareAndSwap(opPending, opAbandoned)
		return ctx.Err()
	case <-c.ctx.Done():
		// Closing: a writer cancels its batch (rolled back unless it was committing).
		op.state.CompareAndSwap(opPending, opAbandoned)
		return errClosed
	}
}

func (c *committer) loop() {
	defer c.wg.Done()
	for {
		var batch []*writeOp
		select {
		case op := <-c.ops:
			batch = c.take(batch, op)
		case <-c.ctx.Done():
			return
		}
		runtime.Gosched() // callers ready to run queue their writes into this batch (see the SQLite store's writeLoop)
	more:
		for len(batch) < maxBatch {
			select {
			case op := <-c.ops:
				batch = c.take(batch, op)
			default:
				break more
			}
		}
		if len(batch) > 0 {
			c.run(batch)
		}
	}
}

// take adds op to batch unless its caller gave up.
func (c *committer) take(batch []*writeOp, op *writeOp) []*writeOp {
	if op.state.CompareAndSwap(opPending, opTaken) {
		batch = append(batch, op)
	}
	return batch
}

// run commits batch, or each of its ops alone if the batch fails, and answers them.
func (c *committer) run(batch []*writeOp) {
	slices.SortStableFunc(batch, func(a, b *writeOp) int { return strings.Compare(a.key, b.key) })
	err := c.send(batch)
	if err == nil || len(batch) == 1 || !rolledBack(err) {
		// After an error other than those (a lost connection) the batch may have
		// committed, and running it again could apply a write twice, so each caller
		// gets the error, as it would alone.
		if err != nil && c.ctx.Err() != nil {
			err = errClosed
		}
		for _, op := range batch {
			op.done <- err
		}
		return
	}
	for _, op := range batch {
		op.done <- c.send([]*writeOp{op})
	}
}

// rolledBack reports whether err from a batch means that none of it was committed:
// the server refused a statement or the commit (the implicit transaction is rolled
// back), or nothing was executed (an argument that could not be encoded, a connection
// that failed before sending).
func rolledBack(err error) bool {
	var pe *pgconn.PgError
	var pre pgx.ErrPreprocessingBatch
	// A FATAL error ends the session, perhaps after the commit: not a rollback.
	return (errors.As(err, &pe) && pe.Severity == "ERROR") || errors.As(err, &pre) || pgconn.SafeToRetry(err)
}

// send runs ops in one batch (one implicit transaction) and stores their results.
func (c *committer) send(ops []*writeOp) error {
	b := &pgx.Batch{}
	ops = c.queueMerged(b, ops)
	for _, op := range ops {
		qq := b.Queue(op.q, op.args...)
		if op.exec {
			qq.Exec(func(ct pgconn.CommandTag) error {
				op.n = ct.RowsAffected()
				return nil
			})
			continue
		}
		qq.Query(func(rows pgx.Rows) error {
			op.tasks = op.tasks[:0]
			for rows.Next() {
				t, err := scanTask(rows)
				if err != nil {
					return err
				}
				op.tasks = append(op.tasks, t)
			}
			return rows.Err()
		})
	}
	return c.pool.SendBatch(c.ctx, b).Close()
}

// minMerge is the fewest ops merged into one statement: below it, the merged
// statement (arrays to unnest, a join) costs the server about as much as the ops alone
// (measured with BenchmarkRiverBaseline).
const minMerge = 8

// queueMerged queues, as one statement each, the groups of at least minMerge
// mergeable ops of one statement text, and returns the other ops.
func (c *committer) queueMerged(b *pgx.Batch, ops []*writeOp) []*writeOp {
	groups := map[string][]*writeOp{}
	var order []string // the texts in the order of their first op (ops are in key order)
	seen := map[string]bool{}
	var rest []*writeOp
	for _, op := range ops {
		if op.merge == noMerge || op.exec || slices.ContainsFunc(op.uniq, func(u string) bool { return seen[u] }) {
			rest = append(rest, op)
			continue
		}
		for _, u := range op.uniq {
			seen[u] = true
		}
		if groups[op.q] == nil {
			order = append(order, op.q)
		}
		groups[op.q] = append(groups[op.q], op)
	}
	for _, q := range order {
		g := groups[q]
		if len(g) < minMerge {
			rest = append(rest, g...)
			continue
		}
		args := make([][]any, len(g))
		for i, op := range g {
			args[i] = op.args
		}
		q, arrays, ok := mergedQuery(g[0].merge, g[0].q, args)
		if !ok {
			rest = append(rest, g...)
			continue
		}
		byKey := make(map[string]*writeOp, len(g))
		for _, op := range g {
			byKey[op.key] = op
		}
		b.Queue(q, arrays...).Query(func(rows pgx.Rows) error {
			for _, op := range g {
				op.tasks = op.tasks[:0]
			}
			for rows.Next() {
				t, err := scanTask(rows)
				if err != nil {
					return err
				}
				if op := byKey[t.ID]; op != nil {
					op.tasks = append(op.tasks, t)
				}
			}
			return rows.Err()
		})
	}
	return rest
}
