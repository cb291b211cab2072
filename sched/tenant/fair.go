package tenant

// Order returns the order in which the dispatcher should try the ready tasks of one
// type whose tenants are tenants (in the store's order: priority, then submission),
// as indices into tenants. It is weighted fair sharing of slots: each next task is
// the first ready task of the tenant with the least (running + taken so far) /
// weight, ties going to the task first in the store's order; within a tenant the
// store's order is kept. running counts each tenant's leased and running tasks.
// A tenant at its MaxRunning gets no more tasks (they are left out of the order).
//
// With one tenant, and no limits, the order is the store's.
func Order(tenants []string, running map[string]int, c Config) []int {
	queues := map[string][]int{}
	var names []string
	for i, t := range tenants {
		if _, ok := queues[t]; !ok {
			names = append(names, t)
		}
		queues[t] = append(queues[t], i)
	}
	taken := map[string]int{}
	out := make([]int, 0, len(tenants))
	for {
		best, bestShare := "", 0.0
		for _, n := range names {
			q := queues[n]
			if len(q) == 0 {
				continue
			}
			l := c.Of(n)
			r := running[n] + taken[n]
			if l.MaxRunning > 0 && r >= l.MaxRunning {
				continue
			}
			share := float64(r) / l.Weight
			if best == "" || share < bestShare || (share == bestShare && q[0] < queues[best][0]) {
				best, bestShare = n, share
			}
		}
		if best == "" {
			return out
		}
		out = append(out, queues[best][0])
		queues[best] = queues[best][1:]
		taken[best]++
	}
}
