-- +goose Up
-- Each grant carries the size of the blob its tenant uploaded, so that a tenant's
-- stored bytes (tenants.<name>.max_blob_bytes) are one indexed sum. Grants from
-- before this migration have size 0: they do not count.
ALTER TABLE blob_grants ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
CREATE INDEX blob_grants_tenant ON blob_grants (tenant) INCLUDE (size);

-- +goose Down
DROP INDEX blob_grants_tenant;
ALTER TABLE blob_grants DROP COLUMN size;
