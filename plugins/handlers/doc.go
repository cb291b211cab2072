// Package handlers holds Paddock's example task handlers, one command per
// directory, each a go-plugin binary built on plugins/sdk:
//
//	checksum     sha256 and crc32 of input blobs
//	logscan      counts by level, top error messages, lines matching patterns
//	score        leaderboard scoring: predictions CSV vs ground-truth CSV
//	compress     gzip or zstd (and back) of input blobs
//	testhandler  misbehaving types for Paddock's own tests
//
// The tests in this directory build every handler and run it through the
// agent's runner, i.e. across the real plugin subprocess boundary:
//
//	CGO_ENABLED=0 go test -count=1 ./plugins/handlers/...
package handlers
