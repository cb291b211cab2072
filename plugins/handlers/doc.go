// Package handlers holds Paddock's example task handlers, one command per
// directory, each a go-plugin binary built on plugins/sdk. Each reads its inputs
// through sdk.Request.Input, so it serves small inline inputs and input files of
// any size alike, in bounded memory:
//
//	checksum     sha256, crc32 (and sha512, sha1, crc32c) of inputs, streamed
//	logscan      counts by level, top error messages, lines matching patterns
//	score        leaderboard scoring: predictions CSV vs ground-truth CSV
//	compress     gzip or zstd (and back): input file → output file, or inline
//	testhandler  misbehaving types for Paddock's own tests
//	testfiles    file inputs/outputs and a lying handler for Paddock's own tests
//
// The tests in this directory build every handler and run it through the
// agent's runner, i.e. across the real plugin subprocess boundary, with inline
// inputs and with large generated input files (1 GiB, 256 MiB, 128 MiB, 1M CSV
// rows), checking each handler process's peak memory (VmHWM); -short skips the
// large ones:
//
//	CGO_ENABLED=0 go test -count=1 -v ./plugins/handlers/...
//	go test -run '^$' -bench Checksum ./plugins/handlers   # inline vs file inputs
package handlers
