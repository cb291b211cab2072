// Package tenant owns what the scheduler knows of tenants beyond the store: who a
// caller is (Principal, carried in the request context), client tokens (New makes one,
// Hash is all the store keeps of it), the per-tenant configuration (Config: weight,
// max_running, max_queued, validated with errors naming the key), the prices of
// accounting (Prices, Cost), and weighted fair sharing of free slots between tenants
// (Order), a pure function the dispatcher calls with the ready tasks of one type.
//
// Unit tests only (no IO):
//
//	go test ./sched/tenant/
//
// The tests through the real API with real agents live in package sched
// (TestTenant*, TestUsage*): go test -run 'TestTenant|TestUsage' ./sched/
package tenant
