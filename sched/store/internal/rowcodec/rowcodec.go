package rowcodec

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// MS returns t as Unix milliseconds, 0 for the zero time.
func MS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMS is the inverse of MS.
func FromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// EncMap encodes inputs or outputs; nil for none.
func EncMap(m map[string][]byte) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

// EncBlobs encodes blob references; "" for none.
func EncBlobs(m map[string]store.BlobRef) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// EncUpstreams encodes upstream inputs; "" for none.
func EncUpstreams(m map[string]store.Upstream) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// Row holds the columns of a task row that are not stored as the Task's own fields.
// A store scans the others straight into Task, these into Row's fields, then calls
// Decode.
type Row struct {
	Task store.Task

	Inputs, Outputs                []byte
	InputBlobs, OutputBlobs        string
	Upstreams                      string
	Requirements, State, Class     string
	TimeoutMS, LeaseID             int64
	LeaseExpiresAt, NotBefore      int64
	CreatedAt, UpdatedAt, LeasedAt int64
	StartedAt, FinishedAt          int64
	ScheduleDeadline               int64
	FailureKind                    string
}

// Decode returns the task the row holds.
func (r *Row) Decode() (store.Task, error) {
	t := r.Task
	t.State, t.Class, t.LeaseID = store.State(r.State), store.Class(r.Class), uint64(r.LeaseID)
	t.Timeout = time.Duration(r.TimeoutMS) * time.Millisecond
	t.LeaseExpiresAt, t.NotBefore = FromMS(r.LeaseExpiresAt), FromMS(r.NotBefore)
	t.CreatedAt, t.UpdatedAt, t.LeasedAt = FromMS(r.CreatedAt), FromMS(r.UpdatedAt), FromMS(r.LeasedAt)
	t.StartedAt, t.FinishedAt = FromMS(r.StartedAt), FromMS(r.FinishedAt)
	t.ScheduleDeadline = FromMS(r.ScheduleDeadline)
	t.FailureKind = store.FailureKind(r.FailureKind)
	req := r.Requirements
	if req == "{}" {
		req = ""
	}
	for _, j := range []struct {
		what string
		data []byte
		into any
	}{
		{"input blobs", []byte(r.InputBlobs), &t.InputBlobs},
		{"output blobs", []byte(r.OutputBlobs), &t.OutputBlobs},
		{"inputs", r.Inputs, &t.Inputs},
		{"outputs", r.Outputs, &t.Outputs},
		{"requirements", []byte(req), &t.Requirements},
		{"upstreams", []byte(r.Upstreams), &t.Upstreams},
	} {
		if len(j.data) > 0 {
			if err := json.Unmarshal(j.data, j.into); err != nil {
				return t, fmt.Errorf("decoding %s of task %s: %w", j.what, t.ID, err)
			}
		}
	}
	return t, nil
}
