-- +goose Up
-- What kind of failure ended an attempt (store.FailureKind: "crashed", "timeout", ...);
-- '' while it runs, when it succeeded, and for attempts recorded before this column.
ALTER TABLE attempts ADD COLUMN failure_kind TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE attempts DROP COLUMN failure_kind;
