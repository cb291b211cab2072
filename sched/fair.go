package sched

import (
	"context"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// Fair sharing between tenants in the dispatcher (issue 14).
//
// Without configured tenants (Config.Tenants empty) dispatch is as before: the ready
// tasks of a type in the store's order (priority, then submission). With tenants
// configured, a round of a type whose queue head fills the read (limit tasks) also
// reads the ready tasks of each configured tenant (store.ReadyTenant), so that one
// tenant's backlog ahead in the queue cannot hide another's tasks, and orders them with tenant.Order: slots go to the tenant with
// the least running tasks per unit of weight, and a tenant at its max_running gets
// none. Running counts are this replica's leases (agents' assignments): with several
// replicas, each shares and limits the slots of its own agents.

// readyTasks returns the ready tasks of typ the dispatcher looks at this round.
func (s *Server) readyTasks(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	tasks, err := s.st.Ready(ctx, typ, now, limit)
	if err != nil || len(s.cfg.Tenants) == 0 || len(tasks) < limit {
		return tasks, err // fewer than limit: that is every ready task of the type
	}
	seen := make(map[string]bool, len(tasks))
	for i := range tasks {
		seen[tasks[i].ID] = true
	}
	for tn := range s.cfg.Tenants {
		more, err := s.st.ReadyTenant(ctx, typ, tn, now, limit)
		if err != nil {
			return nil, err
		}
		for i := range more {
			if !seen[more[i].ID] {
				seen[more[i].ID] = true
				tasks = append(tasks, more[i])
			}
		}
	}
	return tasks, nil
}

// fairOrder orders tasks for dispatch by weighted fair sharing between their tenants
// (tenant.Order) and leaves out those of tenants at their max_running. It returns
// tasks unchanged when no tenant is configured. Caller holds s.agents.mu.
func (s *Server) fairOrder(tasks []store.Task) []store.Task {
	if len(s.cfg.Tenants) == 0 {
		return tasks
	}
	running := s.runningByTenant()
	names := make([]string, len(tasks))
	for i := range tasks {
		names[i] = tasks[i].Tenant
	}
	order := tenant.Order(names, running, s.cfg.Tenants)
	out := make([]store.Task, len(order))
	for i, j := range order {
		out[i] = tasks[j]
	}
	return out
}

// runningByTenant counts each tenant's leased and running tasks (stored and transient)
// on this server's agents. Caller holds s.agents.mu.
func (s *Server) runningByTenant() map[string]int {
	running := map[string]int{}
	for _, a := range s.agents.byID {
		for _, as := range a.running {
			running[as.tenant]++
		}
	}
	return running
}
