// Package riverbench measures River (riverqueue/river), the baseline issue 13 names,
// against Paddock's PostgreSQL store on the same PostgreSQL server in the same run. It
// is a module of its own so that Paddock does not depend on River; it holds only a
// benchmark:
//
//	cd sched/store/postgres/riverbench && go test -run '^$' -bench . -benchtime 5000x
package riverbench
