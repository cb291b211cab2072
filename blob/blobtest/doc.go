// Package blobtest holds the contract suite every blob.Store passes (Contract) and
// deterministic data helpers for tests and benchmarks. Backends call Contract from
// their own tests: go test ./blob/ ./blob/s3store/
package blobtest
