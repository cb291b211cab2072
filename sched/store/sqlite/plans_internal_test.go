package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// TestQueryPlans checks that the queries run on every dispatch round and lease sweep
// are answered from the partial indexes meant for them (migration 00018), not by
// reading the tasks table: a partial index is used only when the query's WHERE names
// its condition in the same words, which an edit of either easily breaks.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ts []store.Task
	for i := range 200 {
		ts = append(ts, storetest.NewTask(fmt.Sprintf("t%03d", i), "echo"))
	}
	if _, _, err := s.CreateBatch(ctx, ts); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, q, index string
		args           []any
	}{
		{"ready online", readyOnlineSQL, "tasks_ready_online", []any{"echo", 0, 10}},
		{"ready batch", readyBatchSQL, "tasks_ready", []any{"echo", 0, 10}},
		{"ready, online then batch (online arm)", readySQL(16), "tasks_ready_online", []any{"echo", 0, "echo", 0}},
		{"ready, online then batch (batch arm)", readySQL(16), "tasks_ready", []any{"echo", 0, "echo", 0}},
		{"ready stats", readyStatsSQL, "tasks_ready", []any{0, 10, `["echo"]`}},
		{"ready of a tenant", readyTenantSQL, "tasks_tenant_ready", []any{"a", "echo", 0, 10}},
		{"queued of a tenant", countTenantSQL(store.Queued), "tasks_tenant_ready", []any{"a"}},
		{"expired leases", expiredSQL, "tasks_lease_expiry", []any{time.Now().UnixMilli(), 10}},
		{"finished tasks", "SELECT id FROM tasks WHERE id IN " + finishedSet, "tasks_finished", []any{"succeeded", 0, 10}},
	} {
		var def string
		if err := s.r.QueryRowContext(ctx, "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", c.index).Scan(&def); err != nil {
			t.Fatalf("%s: index %s: %v", c.name, c.index, err)
		}
		if !strings.Contains(def, " WHERE ") {
			t.Errorf("%s: index %s is not partial: %s", c.name, c.index, def)
		}
		rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+c.q, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		all := strings.Join(plan, "; ")
		if !strings.Contains(all, "INDEX "+c.index+" ") {
			t.Errorf("%s: plan %q does not use index %s", c.name, all, c.index)
		}
		for _, p := range plan {
			if strings.HasPrefix(p, "SCAN tasks") && !strings.Contains(p, "INDEX") {
				t.Errorf("%s: plan %q reads the whole tasks table", c.name, all)
			}
		}
	}
}
