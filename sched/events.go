package sched

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/console"
	"github.com/paddockvm/paddock/sched/store"
)

// Task changes as they happen, for the web console's live feed (/ui/events) and its
// charts (History).
//
// Every change of a task goes through one of four store methods: Create and
// CreateBatch (submits), Lease (dispatch) and Update (acks, reports, expiries, cancels,
// requeues). The server
// wraps its store in observedStore, which, after each of these succeeds, publishes the
// task as it now is (without payload, inputs or outputs: as List returns it) to the
// feed's subscribers and counts it in the history. Nothing is read again and nothing
// polls: a subscriber sees exactly the changes this server made. Over a store shared by
// several replicas (store.Shared), each replica's feed and history carry the changes
// that replica makes, not the others'.

// FeedBuffer is how many events a subscriber of the feed may lag behind. One that
// falls further behind is dropped (its channel closed) and must resync by reading the
// list again (the console does).
const FeedBuffer = 1024

// observedStore is the server's store, publishing every task change to the feed and
// the history.
type observedStore struct {
	store.Store
	s *Server
}

// observedShared is observedStore over a store.Shared store: it keeps the Shared
// interface visible (the replicas' wake-ups, replica.go).
type observedShared struct {
	observedStore
	sh store.Shared
}

func (o observedShared) Wakeups(ctx context.Context) <-chan store.Wakeup { return o.sh.Wakeups(ctx) }

// observe wraps st for s, keeping store.Shared when st implements it.
func observe(st store.Store, s *Server) store.Store {
	o := observedStore{Store: st, s: s}
	if sh, ok := st.(store.Shared); ok {
		return observedShared{observedStore: o, sh: sh}
	}
	return o
}

func (o observedStore) Create(ctx context.Context, t store.Task) (store.Task, bool, error) {
	st, created, err := o.Store.Create(ctx, t)
	if err == nil && created {
		o.s.hist.submitted()
		o.s.feed.publish(st)
		o.s.queuedOnline(st)
	}
	return st, created, err
}

func (o observedStore) CreateLease(ctx context.Context, t store.Task, now time.Time, g store.Grant) (store.Task, bool, error) {
	st, created, err := o.Store.CreateLease(ctx, t, now, g)
	if err == nil && created {
		o.s.hist.submitted()
		if st.State == store.Leased {
			// The feed tells the task's story as for any other: submitted (queued), then
			// leased, though one commit stored both.
			q := st
			q.State, q.Attempt, q.LeaseID, q.AgentID, q.LeaseSecret = store.Queued, 0, 0, "", ""
			q.LeaseExpiresAt, q.LeasedAt, q.UpdatedAt = time.Time{}, time.Time{}, q.CreatedAt
			o.s.feed.publish(q)
		}
		o.leased([]store.Task{st}, now)
	}
	return st, created, err
}

func (o observedStore) CreateBatch(ctx context.Context, ts []store.Task) ([]store.Task, []bool, error) {
	stored, created, err := o.Store.CreateBatch(ctx, ts)
	if err == nil {
		for i := range stored {
			if i < len(created) && created[i] {
				o.s.hist.submitted()
				o.s.feed.publish(stored[i])
				o.s.queuedOnline(stored[i])
			}
		}
	}
	return stored, created, err
}

func (o observedStore) Lease(ctx context.Context, now time.Time, grants []store.Grant) ([]store.Task, error) {
	ts, err := o.Store.Lease(ctx, now, grants)
	o.leased(ts, now)
	return ts, err
}

// leased publishes the tasks leased at now.
func (o observedStore) leased(ts []store.Task, now time.Time) {
	for i := range ts {
		o.s.hist.started(ts[i], now)
		o.s.feed.publish(ts[i])
	}
}

func (o observedStore) Update(ctx context.Context, u store.Update) (store.Task, error) {
	t, err := o.Store.Update(ctx, u)
	if err == nil {
		o.updated(u, t)
	}
	return t, err
}

func (o observedStore) UpdateLease(ctx context.Context, u store.Update, now time.Time, grants []store.Grant) (store.Task, []store.Task, error) {
	t, ts, err := o.Store.UpdateLease(ctx, u, now, grants)
	if err == nil {
		o.updated(u, t)
		o.leased(ts, now)
	}
	return t, ts, err
}

// updated publishes t, as u left it.
func (o observedStore) updated(u store.Update, t store.Task) {
	if u.EndAttempt {
		kind := string(u.FailureKind)
		if kind == "" && u.To != store.Succeeded {
			kind = "none"
		}
		o.s.metrics.attempts.WithLabelValues(string(u.To), kind).Inc()
	}
	if t.State.Terminal() {
		o.s.hist.finished(t)
		o.s.outputsAt(t)
		o.s.pipes.taskEnded(t.ID)
	}
	o.s.feed.publish(t)
	o.s.queuedOnline(t)
}

// MaxFeedSubscribers bounds the open subscriptions to the task feed (task ls --watch,
// the console's live pages) of one tenant, and of the admins together: each holds a
// buffer and is visited on every task change.
const MaxFeedSubscribers = 64

// feed fans task changes out to subscribers. mu guards the fields below.
type feed struct {
	mu     sync.Mutex
	subs   map[chan console.Event]string // subscriber -> its tenant ("": every tenant's tasks)
	per    map[string]int                // open subscriptions by tenant ("": admins)
	closed bool
}

func newFeed() *feed { return &feed{subs: map[chan console.Event]string{}, per: map[string]int{}} }

// tenantFeed is the feed of one tenant's tasks (a non-admin's console).
type tenantFeed struct {
	f      *feed
	tenant string
}

// Subscribe implements console.Feed.
func (t tenantFeed) Subscribe() (<-chan console.Event, func(), error) {
	return t.f.subscribe(t.tenant)
}

var _ console.Feed = (*feed)(nil)

// Subscribe implements console.Feed: the channel carries every task change from now
// on; it is closed when the subscriber lags more than FeedBuffer events or the server
// shuts down. cancel ends the subscription.
func (f *feed) Subscribe() (<-chan console.Event, func(), error) { return f.subscribe("") }

// subscribe is Subscribe for the tasks of tenant ("": every tenant's). It refuses a
// subscription past MaxFeedSubscribers for the tenant.
func (f *feed) subscribe(tenant string) (<-chan console.Event, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.per[tenant] >= MaxFeedSubscribers {
		who := "tenant " + tenant
		if tenant == "" {
			who = "the admins"
		}
		return nil, nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"%s already hold %d task watches (task ls --watch, console pages), the most at once (sched.MaxFeedSubscribers): close one", who, MaxFeedSubscribers))
	}
	ch := make(chan console.Event, FeedBuffer)
	if f.closed {
		close(ch)
		return ch, func() {}, nil
	}
	f.subs[ch] = tenant
	f.per[tenant]++
	done := false
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !done {
			done = true
			if f.per[tenant]--; f.per[tenant] <= 0 {
				delete(f.per, tenant)
			}
		}
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}, nil
}

// publish sends t to every subscriber as a "task" event (see publishEvent).
func (f *feed) publish(t store.Task) {
	f.publishEvent("task", t.Tenant, func() ([]byte, error) { return protojson.Marshal(listForm(t)) })
}

// publishEvent sends an event named name about a task of tenant tn to every subscriber
// of every tenant or of tn, dropping those whose buffer is full. Without subscribers it costs a lock; data is made outside the lock.
func (f *feed) publishEvent(name, tn string, data func() ([]byte, error)) {
	f.mu.Lock()
	n := len(f.subs)
	f.mu.Unlock()
	if n == 0 {
		return
	}
	b, err := data()
	if err != nil {
		return // cannot happen: the events' data always marshals
	}
	ev := console.Event{Name: name, Data: b}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch, only := range f.subs {
		if only != "" && only != tn {
			continue
		}
		select {
		case ch <- ev:
		default:
			delete(f.subs, ch)
			close(ch)
		}
	}
}

// close ends every subscription and refuses new ones (the client port shuts down).
func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}

// listForm is t as List returns it: without payload, inputs, outputs or attempts.
func listForm(t store.Task) *paddockv1.Task {
	t.Payload, t.Inputs, t.Output, t.Outputs, t.LeaseSecret = nil, nil, nil, nil, ""
	t.InputBlobs, t.OutputBlobs = nil, nil
	return toProto(t, nil)
}
