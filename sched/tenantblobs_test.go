package sched_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/sched/tenant"
)

// TestTenantBlobIsolation: a tenant reads only the blobs it uploaded or its own tasks
// name. Another tenant that knows the digest gets exactly what it would get for a blob
// that is not stored (HEAD, GET, naming it in a submit), cannot delete it or list the
// store, and gains access only by uploading the same bytes; wrong bytes under the
// digest gain nothing. Admins see everything.
func TestTenantBlobIsolation(t *testing.T) {
	cfg := tenantConfig()
	cfg.Blobs = openFS(t)
	ts := startServer(t, cfg)
	admin := clientsFor(ts, adminToken)
	tokA, tokB := newToken(t, admin, "tenant-a"), newToken(t, admin, "tenant-b")
	ctx := context.Background()
	blobsA := blobhttp.Client{BaseURL: ts.url, Token: tokA}
	blobsB := blobhttp.Client{BaseURL: ts.url, Token: tokB}
	blobsAdmin := blobhttp.Client{BaseURL: ts.url, Token: adminToken}

	secret := []byte("tenant A's secret input")
	d := blob.FromBytes(secret)
	if _, up, err := blobsA.Put(ctx, d, bytes.NewReader(secret), int64(len(secret)), nil); err != nil || !up {
		t.Fatalf("A uploads: uploaded %v, %v", up, err)
	}
	missing := blob.FromBytes([]byte("stored by nobody"))

	// B knows the digest: every answer is the one for a blob that is not stored.
	for _, dg := range []blob.Digest{d, missing} {
		if _, err := blobsB.Stat(ctx, dg); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("B stats %s: %v, want not found", dg, err)
		}
		var buf bytes.Buffer
		if _, err := blobsB.Get(ctx, dg, &buf, 0, nil); !errors.Is(err, blob.ErrNotFound) || buf.Len() != 0 {
			t.Errorf("B reads %s: %d bytes, %v; want not found", dg, buf.Len(), err)
		}
	}
	submitB := func(dg blob.Digest) error {
		_, err := clientsFor(ts, tokB).tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{
			Type: "test.echo", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(dg)}}}}))
		return err
	}
	errHidden, errMissing := submitB(d), submitB(missing)
	if connect.CodeOf(errHidden) != connect.CodeInvalidArgument ||
		strings.ReplaceAll(errHidden.Error(), string(d), "D") != strings.ReplaceAll(errMissing.Error(), string(missing), "D") {
		t.Errorf("B submits with A's blob: %v\nwant the answer for a blob not stored: %v", errHidden, errMissing)
	}
	// Deleting a blob and listing the store are an admin's.
	for _, c := range []blobhttp.Client{blobsA, blobsB} {
		if err := c.Delete(ctx, d); err == nil || !strings.Contains(err.Error(), "admin token") {
			t.Errorf("a tenant deletes a blob: %v, want refused (admin token)", err)
		}
		if _, _, err := c.List(ctx, "", 10); err == nil || !strings.Contains(err.Error(), "admin token") {
			t.Errorf("a tenant lists the store: %v, want refused (admin token)", err)
		}
	}
	if infos, _, err := blobsAdmin.List(ctx, "", 10); err != nil || len(infos) != 1 || infos[0].Digest != d {
		t.Errorf("admin lists: %v %v, want %s", infos, err, d)
	}
	// Wrong bytes under the digest are refused and gain nothing.
	req, _ := http.NewRequest(http.MethodPut, ts.url+blobhttp.Prefix+"/"+string(d), bytes.NewReader([]byte("not the secret, same length!!!")[:len(secret)]))
	req.Header.Set("Authorization", "Bearer "+tokB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("B uploads wrong bytes as %s: status %d, want 400", d, resp.StatusCode)
	}
	if _, err := blobsB.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after a wrong upload B stats %s: %v, want not found", d, err)
	}
	// The same bytes prove B holds them: B may read and name the blob from then on.
	if _, _, err := blobsB.Put(ctx, d, bytes.NewReader(secret), int64(len(secret)), nil); err != nil {
		t.Fatalf("B uploads the same bytes: %v", err)
	}
	var buf bytes.Buffer
	if _, err := blobsB.Get(ctx, d, &buf, 0, nil); err != nil || !bytes.Equal(buf.Bytes(), secret) {
		t.Errorf("B reads after uploading: %q, %v", buf.Bytes(), err)
	}
	if err := submitB(d); err != nil {
		t.Errorf("B submits with a blob it uploaded: %v", err)
	}
	// A blob still answers to an admin, and deleting it is the admin's.
	if _, err := blobsAdmin.Stat(ctx, d); err != nil {
		t.Errorf("admin stats: %v", err)
	}
	if err := blobsAdmin.Delete(ctx, d); err != nil {
		t.Errorf("admin deletes: %v", err)
	}
}

// TestTenantBlobQuota: a tenant's uploads are held to tenants.<name>.max_blob_bytes.
// An upload past it is refused with an error naming the key and stores nothing; the
// same blob uploaded again costs nothing more; a blob another tenant stored costs the
// uploader all the same; an upload of unknown length is cut off at what is left; an
// admin's delete and retention give the room back; other tenants and admins are not
// limited.
func TestTenantBlobQuota(t *testing.T) {
	cfg := tenantConfig()
	cfg.Blobs = openFS(t)
	cfg.BlobRetention = time.Hour
	cfg.Tenants = tenant.Config{"quota": {MaxBlobBytes: 1000}}
	ts := startServer(t, cfg)
	admin := clientsFor(ts, adminToken)
	q := blobhttp.Client{BaseURL: ts.url, Token: newToken(t, admin, "quota")}
	other := blobhttp.Client{BaseURL: ts.url, Token: newToken(t, admin, "other")}
	adm := blobhttp.Client{BaseURL: ts.url, Token: adminToken}
	ctx := context.Background()
	data := func(c byte, n int) ([]byte, blob.Digest) {
		b := bytes.Repeat([]byte{c}, n)
		return b, blob.FromBytes(b)
	}
	put := func(c blobhttp.Client, b []byte, size int64) error {
		_, _, err := c.Put(ctx, blob.FromBytes(b), bytes.NewReader(b), size, nil)
		return err
	}
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "tenants.quota.max_blob_bytes") {
			t.Errorf("%s: %v; want a refusal naming tenants.quota.max_blob_bytes", what, err)
		}
	}
	stored := func(d blob.Digest) bool {
		_, err := cfg.Blobs.Stat(ctx, d)
		return err == nil
	}
	a, da := data('a', 600)
	b, db := data('b', 600)
	c, _ := data('c', 400)
	u, du := data('u', 10)
	if err := put(q, a, 600); err != nil {
		t.Fatalf("600 of 1000 bytes: %v", err)
	}
	refused("600 more", put(q, b, 600))
	if stored(db) {
		t.Error("the refused upload was stored")
	}
	if err := put(q, a, 600); err != nil {
		t.Errorf("the same blob again: %v", err)
	}
	if err := put(q, c, 400); err != nil {
		t.Errorf("400 more, to exactly 1000: %v", err)
	}
	refused("10 bytes of unknown length with no room left", put(q, u, -1))
	if stored(du) {
		t.Error("the refused upload of unknown length was stored")
	}
	if err := put(other, b, 600); err != nil {
		t.Errorf("another tenant, no limit: %v", err)
	}
	refused("a blob another tenant stored", put(q, b, 600))
	big, _ := data('z', 5000)
	if err := put(adm, big, 5000); err != nil {
		t.Errorf("an admin, no limit: %v", err)
	}

	// An admin's delete of a blob gives its uploaders the room back.
	if err := adm.Delete(ctx, da); err != nil {
		t.Fatalf("admin deletes blob a: %v", err)
	}
	if err := put(q, b, 600); err != nil {
		t.Errorf("600 after a's delete (400 held): %v", err)
	}
	// Retention's delete too: past it, nothing a task uses, everything goes.
	if _, err := ts.srv.CollectGarbage(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatalf("CollectGarbage: %v", err)
	}
	if err := put(q, u, -1); err != nil {
		t.Errorf("10 bytes of unknown length after retention emptied the store: %v", err)
	}
	w, _ := data('w', 990)
	if err := put(q, w, -1); err != nil {
		t.Errorf("990 bytes of unknown length, to exactly 1000: %v", err)
	}
	refused("one more byte", put(q, []byte{1}, 1))
}
