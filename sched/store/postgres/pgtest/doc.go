// Package pgtest starts a real PostgreSQL server for tests: initdb into a fresh
// directory, pg_ctl start on a free loopback port, pg_ctl stop at the test's cleanup.
// Start skips the test (or fails it under PADDOCK_REQUIRE_VM=1, see testutil.Skip) when
// the PostgreSQL server binaries are missing; `make setup` installs them (the
// postgresql package, binaries under /usr/lib/postgresql/<major>/bin).
//
// PostgreSQL refuses to run as root: when the test runs as root, the server's files are
// owned by the postgres user and initdb, pg_ctl and postgres run as that user
// (runuser -u postgres).
//
// The server's superuser is "paddock" with a password (password authentication over
// TCP, as in production), so tests can check a wrong password too. Each test that needs
// an empty database calls NewDatabase.
//
// Server.MeasureCPU reports a benchmark's CPU time per op in the server's processes
// and in the benchmark's own (read from /proc), steadier than rates on a shared machine.
//
// PADDOCK_PGTEST_SERVER_OPTIONS adds options to the server's command line, for
// profiling, e.g. "-c shared_preload_libraries=pg_stat_statements" (then CREATE
// EXTENSION pg_stat_statements in the database and read its view before the test ends).
package pgtest
