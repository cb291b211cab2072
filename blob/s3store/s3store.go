package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/paddockvm/paddock/blob"
)

// Config says where the blobs live (server.s3_* keys).
type Config struct {
	// Endpoint is the S3 service URL, e.g. "https://minio.example:9000"; empty: AWS S3.
	Endpoint string
	// Bucket holds the blobs; it must exist.
	Bucket string
	// Region of the bucket; empty: "us-east-1" with an Endpoint, else the AWS default chain.
	Region string
	// Prefix goes in front of every key, e.g. "paddock/" (a "/" is added when missing).
	Prefix string
	// AccessKey and SecretKey: set both, or neither for the AWS default credential chain
	// (environment, shared config, instance role).
	AccessKey string
	SecretKey string
	// PathStyle uses http://endpoint/bucket/key URLs (MinIO, Ceph, gofakes3) instead of
	// http://bucket.endpoint/key.
	PathStyle bool
	// HTTPClient to use (nil: the SDK's default). Tests set it.
	HTTPClient *http.Client
}

// Validate returns an error naming the first bad field and how to fix it.
func (c Config) Validate() error {
	if c.Bucket == "" {
		return fmt.Errorf("%w: s3 Bucket is empty: set server.s3_bucket to an existing bucket", blob.ErrInvalid)
	}
	if strings.ContainsAny(c.Bucket, "/ ") {
		return fmt.Errorf("%w: s3 Bucket %q: a bucket name has no '/' or spaces (put a path in server.s3_prefix instead)", blob.ErrInvalid, c.Bucket)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: s3 Endpoint %q: want an http:// or https:// URL such as https://minio.example:9000", blob.ErrInvalid, c.Endpoint)
		}
	}
	if strings.HasPrefix(c.Prefix, "/") {
		return fmt.Errorf("%w: s3 Prefix %q: keys do not start with '/': drop the leading '/'", blob.ErrInvalid, c.Prefix)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return fmt.Errorf("%w: s3 AccessKey and SecretKey: set both (server.s3_access_key, server.s3_secret_key), or neither for the AWS default credential chain", blob.ErrInvalid)
	}
	return nil
}

// StaleAfter is the age past which New deletes temporary objects (uploads a crash left).
const StaleAfter = 24 * time.Hour

const (
	partSize    = 16 << 20 // multipart upload part (×10000 parts: blobs up to 160 GiB)
	concurrency = 3
)

// copyLimit is the largest object CopyObject copies; above it Put uses a multipart copy
// in copyPartSize ranges.
var (
	copyLimit    int64 = 5 << 30
	copyPartSize int64 = 1 << 30
)

// Store is the S3 blob store.
type Store struct {
	cfg      Config
	client   *s3.Client
	uploader *manager.Uploader
	prefix   string
}

var _ blob.Store = (*Store)(nil)

// New checks cfg, connects, checks the bucket answers, and deletes stale temporary objects.
// An unreachable endpoint gives an error wrapping blob.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Region == "" && cfg.Endpoint != "" {
		cfg.Region = "us-east-1"
	}
	opts := []func(*awsconfig.LoadOptions) error{
		// S3-compatible servers often lack the newer default checksums.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		awsconfig.WithRetryMaxAttempts(3),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, awsconfig.WithHTTPClient(cfg.HTTPClient))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: loading AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	s := &Store{cfg: cfg, client: client, prefix: cfg.Prefix}
	s.uploader = manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = partSize
		u.Concurrency = concurrency
	})
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %s: the bucket does not exist: create it, or set server.s3_bucket to one that does", blob.ErrInvalid, s)
		}
		return nil, s.mapErr("checking the bucket", "", err)
	}
	if err := s.cleanTemp(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// String returns "s3:<endpoint>/<bucket>/<prefix>".
func (s *Store) String() string {
	ep := s.cfg.Endpoint
	if ep == "" {
		ep = "aws"
	}
	return "s3:" + ep + "/" + s.cfg.Bucket + "/" + s.prefix
}

func (s *Store) key(d blob.Digest) string { return s.prefix + "sha256/" + d.Hex() }
func (s *Store) tmpPrefix() string        { return s.prefix + "tmp/" }

// cleanTemp deletes temporary objects older than StaleAfter.
func (s *Store) cleanTemp(ctx context.Context) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.tmpPrefix())})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.mapErr("listing stale uploads", "", err)
		}
		for _, o := range page.Contents {
			if o.LastModified != nil && time.Since(*o.LastModified) > StaleAfter {
				if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: o.Key}); err != nil {
					return s.mapErr("deleting stale upload "+aws.ToString(o.Key), "", err)
				}
			}
		}
	}
	return nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	if err := d.Validate(); err != nil {
		return blob.Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(d))})
	if err != nil {
		return blob.Info{}, s.mapErr("stat", d, err)
	}
	return blob.Info{Digest: d, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Open implements blob.Store.
func (s *Store) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	info, err := s.Stat(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := blob.CheckOffset(d, offset, info.Size); err != nil {
		return nil, err
	}
	if offset == info.Size {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(d))}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, s.mapErr("open", d, err)
	}
	return &body{ReadCloser: out.Body, s: s, d: d}, nil
}

// body maps read errors of an object's body to blob's classes.
type body struct {
	io.ReadCloser
	s *Store
	d blob.Digest
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: reading blob %s from %s: %w", blob.ErrUnavailable, b.d, b.s, err)
	}
	return n, err
}

// Put implements blob.Store: stream to a temporary object while hashing, then copy to
// the final key only when digest and size match.
func (s *Store) Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) (blob.Info, error) {
	if err := d.Validate(); err != nil {
		return blob.Info{}, err
	}
	if size < -1 {
		return blob.Info{}, fmt.Errorf("%w: size %d of blob %s: want a size >= 0, or -1 when unknown", blob.ErrInvalid, size, d)
	}
	if info, err := s.Stat(ctx, d); err == nil {
		return info, nil
	} else if !errors.Is(err, blob.ErrNotFound) {
		return blob.Info{}, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := s.tmpPrefix() + d.Hex() + "." + hex.EncodeToString(rnd[:])
	defer func() {
		// Delete the temporary object whatever happened (a failed upload may have left it).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.client.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(tmp)})
	}()
	src := &readErr{r: blob.SizeLimitReader(d, r, size)}
	hr := blob.NewHashingReader(src)
	_, err := s.uploader.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(s.cfg.Bucket),
		Key:         aws.String(tmp),
		Body:        hr,
		ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		if src.err != nil { // the data's source failed, or was longer than size
			if errors.Is(src.err, blob.ErrMismatch) {
				return blob.Info{}, src.err
			}
			return blob.Info{}, fmt.Errorf("storing blob %s in %s: reading the data (nothing stored): %w", d, s, src.err)
		}
		if ctx.Err() != nil {
			return blob.Info{}, fmt.Errorf("storing blob %s in %s: %w", d, s, ctx.Err())
		}
		return blob.Info{}, s.mapErr("uploading", d, err)
	}
	if err := hr.Verify(d, size); err != nil {
		return blob.Info{}, err
	}
	if err := s.copy(ctx, tmp, s.key(d), hr.Size()); err != nil {
		return blob.Info{}, s.mapErr("moving into place", d, err)
	}
	info, err := s.Stat(ctx, d)
	if err != nil {
		return blob.Info{}, err
	}
	if info.Size != hr.Size() {
		// A server that got the copy wrong: never leave a wrong blob visible.
		s.client.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(d))})
		return blob.Info{}, fmt.Errorf("%w: storing blob %s in %s: the server-side copy made %d bytes of %d (removed): check the S3 service supports CopyObject/UploadPartCopy", blob.ErrUnavailable, d, s, info.Size, hr.Size())
	}
	return info, nil
}

// readErr remembers the error of the data's source, so an upload failure can be told
// from a source failure.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// copy copies object src to dst server-side: CopyObject up to copyLimit, a multipart copy
// above.
func (s *Store) copy(ctx context.Context, src, dst string, size int64) error {
	source := s.cfg.Bucket + "/" + url.PathEscape(src)
	source = strings.ReplaceAll(source, "%2F", "/")
	if size <= copyLimit {
		_, err := s.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), CopySource: aws.String(source)})
		return err
	}
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), ContentType: aws.String("application/octet-stream")})
	if err != nil {
		return err
	}
	var parts []types.CompletedPart
	for i, off := int32(1), int64(0); off < size; i, off = i+1, off+copyPartSize {
		end := min(off+copyPartSize, size) - 1
		out, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), UploadId: up.UploadId, PartNumber: aws.Int32(i),
			CopySource: aws.String(source), CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		})
		if err != nil {
			s.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), UploadId: up.UploadId})
			return fmt.Errorf("copying part %d: %w", i, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(i)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		s.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(dst), UploadId: up.UploadId})
	}
	return err
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, d blob.Digest) error {
	if _, err := s.Stat(ctx, d); err != nil { // S3 deletes a missing key without complaint
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(d))}); err != nil {
		return s.mapErr("delete", d, err)
	}
	return nil
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, after blob.Digest, limit int) ([]blob.Info, error) {
	if after != "" {
		if err := after.Validate(); err != nil {
			return nil, fmt.Errorf("listing after: %w", err)
		}
	}
	if limit <= 0 {
		limit = blob.DefaultListLimit
	}
	pfx := s.prefix + "sha256/"
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(pfx), MaxKeys: aws.Int32(int32(min(limit, 1000)))}
	if after != "" {
		in.StartAfter = aws.String(pfx + after.Hex())
	}
	var out []blob.Info
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() && len(out) < limit {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.mapErr("listing", "", err)
		}
		for _, o := range page.Contents {
			d := blob.Digest(blob.DigestPrefix + strings.TrimPrefix(aws.ToString(o.Key), pfx))
			if d.Validate() != nil {
				continue // not a blob (someone else's object under the prefix)
			}
			out = append(out, blob.Info{Digest: d, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &nsb) {
		return true
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// mapErr maps an SDK error to blob's classes, saying what was being done.
func (s *Store) mapErr(op string, d blob.Digest, err error) error {
	what := s.String()
	if d != "" {
		what = "blob " + string(d) + " in " + s.String()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, what, err)
	}
	if isNotFound(err) {
		if d == "" {
			return fmt.Errorf("%w: %s %s: the bucket is gone: create it, or set server.s3_bucket to one that exists: %w", blob.ErrUnavailable, op, what, err)
		}
		return fmt.Errorf("%w: %s: blob %s is not in %s", blob.ErrNotFound, op, d, s)
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode > 0 {
		code := re.HTTPStatusCode()
		var ae smithy.APIError
		apiCode := ""
		if errors.As(err, &ae) {
			apiCode = ae.ErrorCode()
		}
		switch {
		case code >= 500 || code == http.StatusTooManyRequests || apiCode == "SlowDown":
			return fmt.Errorf("%w: %s %s: the S3 service answered %d %s: retry later: %w", blob.ErrUnavailable, op, what, code, apiCode, err)
		case code == http.StatusForbidden || code == http.StatusUnauthorized:
			return fmt.Errorf("%w: %s %s: access denied (%s): check server.s3_access_key/server.s3_secret_key and the bucket's policy: %w", blob.ErrUnavailable, op, what, apiCode, err)
		}
		return fmt.Errorf("%s %s: %w", op, what, err)
	}
	// No HTTP answer at all: the endpoint is down or unreachable.
	return fmt.Errorf("%w: %s %s: cannot reach the S3 endpoint %s: check it runs and server.s3_endpoint: %w", blob.ErrUnavailable, op, what, s.cfg.Endpoint, err)
}
