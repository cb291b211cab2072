package sched

import (
	"fmt"
	"sync"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/sched/tenant"
)

// MaxTenantWaits bounds the Wait calls one tenant (and the admins together) has open at
// once: each holds a goroutine, a timer and a stream until its task ends or its timeout.
const MaxTenantWaits = 4096

// tenantCount counts something each tenant holds open at once, up to max each; the
// admins count together, under "".
type tenantCount struct {
	mu  sync.Mutex
	n   map[string]int
	max int
}

func newTenantCount(max int) *tenantCount { return &tenantCount{n: map[string]int{}, max: max} }

// take counts one more for p's tenant and returns the function that gives it back, or
// false when the tenant already holds max.
func (c *tenantCount) take(p tenant.Principal) (func(), bool) {
	key := p.Tenant
	if p.Admin {
		key = ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return nil, false
	}
	c.n[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[key]--; c.n[key] <= 0 {
				delete(c.n, key)
			}
		})
	}, true
}

// waitSlot takes one of the caller's MaxTenantWaits, or says why not.
func (s *Server) waitSlot(p tenant.Principal) (func(), error) {
	done, ok := s.waits.take(p)
	if !ok {
		who := "tenant " + p.Tenant
		if p.Admin {
			who = "the admins"
		}
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"%s already wait on %d tasks at once, the most (sched.MaxTenantWaits): wait on fewer at once, or follow many tasks with one paddock task ls --watch (WatchTasks)", who, MaxTenantWaits))
	}
	return done, nil
}
