// Package s3store is a blob.Store on an S3-compatible object store (work in progress).
package s3store

import (
	"context"
	"errors"

	"github.com/paddockvm/paddock/blob"
)

// Config says where the blobs live.
type Config struct {
	Endpoint  string // e.g. "https://s3.example.com"; empty: AWS
	Bucket    string
	Region    string
	Prefix    string // key prefix, e.g. "paddock/"
	AccessKey string // empty (with SecretKey): the AWS default credential chain
	SecretKey string
	PathStyle bool // path-style URLs (MinIO, Ceph, gofakes3)
}

// Store is the S3 blob store.
type Store struct{ blob.Store }

// New connects to the bucket.
func New(ctx context.Context, cfg Config) (*Store, error) {
	return nil, errors.New("s3store: not implemented yet")
}
