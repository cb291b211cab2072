package sched

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/paddockvm/paddock/api/guestabi"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// FuzzValidateSpec builds a TaskSpec from fuzzed fields (the scalars as arguments,
// the maps and requirements from fuzzed protobuf bytes) and runs it through
// validateSpec, the check Submit makes. It must never panic; a refusal must be an
// InvalidArgument naming a "task." field; and an accepted spec must hold the documented
// limits: a type name, payload plus inline inputs (with their names) within
// max_inline_bytes, priority within MinPriority..MaxPriority, a known class, the
// timeout exactly timeout_ms up to MaxTimeout (no overflow) or the default, at most
// MaxInlineInputs inputs, 1..MaxMaxAttempts attempts, a well-formed idempotency key
// and tenant, requirements within MaxCPUMillis, MaxMemoryBytes and the label limits —
// with the spec's values carried over unchanged. (Found before the fix: timeout_ms
// over 2^63 ns wrapped to a negative or short timeout, issue 16 item 10.)
//
//	go test -run '^$' -fuzz '^FuzzValidateSpec$' -fuzztime 10m ./sched
func FuzzValidateSpec(f *testing.F) {
	extra := func(sp *paddockv1.TaskSpec) []byte {
		b, err := proto.Marshal(sp)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add("checksum.sha256", []byte("hello"), int32(0), int32(0), int64(0), int32(0), "", "", []byte(nil))
	f.Add("a", []byte(nil), int32(100), int32(1), int64(1), int32(100), "k:1", "team-a", extra(&paddockv1.TaskSpec{
		Inputs: map[string][]byte{"in": []byte("data")}, Requirements: &paddockv1.Requirements{CpuMillis: 500, MemoryBytes: 1 << 20, Labels: map[string]string{"gpu": "no"}}}))
	f.Add("a", bytes.Repeat([]byte("x"), 60), int32(-101), int32(3), int64(-1), int32(101), "bad key", "-x", []byte(nil))
	f.Add("t", []byte(nil), int32(0), int32(2), int64(9223372036854775807), int32(0), "", "", []byte(nil))
	f.Add("t", []byte(nil), int32(0), int32(2), int64(9223372036855), int32(0), "", "", []byte(nil))
	f.Add("t", []byte("1234567890"), int32(0), int32(0), int64(0), int32(0), "", "", extra(&paddockv1.TaskSpec{
		Inputs: map[string][]byte{strings.Repeat("n", 50): []byte("1234")}, Requirements: &paddockv1.Requirements{CpuMillis: -1}}))
	f.Add(strings.Repeat("t", 129), []byte(nil), int32(0), int32(0), int64(0), int32(0), strings.Repeat("k", 129), strings.Repeat("t", 65), []byte(nil))
	f.Add("t", []byte(nil), int32(0), int32(0), MaxTimeout.Milliseconds(), int32(0), "", "", []byte(nil))
	f.Add("t", []byte(nil), int32(0), int32(0), MaxTimeout.Milliseconds()+1, int32(0), "", "", extra(&paddockv1.TaskSpec{
		Requirements: &paddockv1.Requirements{CpuMillis: MaxCPUMillis + 1, MemoryBytes: MaxMemoryBytes + 1}}))
	f.Add("t", []byte(nil), int32(0), int32(0), int64(0), int32(0), "", "", extra(&paddockv1.TaskSpec{
		Requirements: &paddockv1.Requirements{CpuMillis: MaxCPUMillis, MemoryBytes: MaxMemoryBytes,
			Labels: map[string]string{"": "x", strings.Repeat("k", MaxLabelKey+1): strings.Repeat("v", MaxLabelValue+1)}}}))
	f.Add("t", []byte(nil), int32(0), int32(0), int64(0), int32(0), "", "", extra(&paddockv1.TaskSpec{Inputs: map[string][]byte{"../x": nil}}))
	f.Add("_x", []byte(nil), int32(0), int32(-1), int64(0), int32(-1), "é", "DEFAULT", []byte{0xff})
	const maxInline = 64
	s, err := New(Config{Dev: true, MaxInlineBytes: maxInline, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, typ string, payload []byte, priority, class int32, timeoutMs int64, maxAttempts int32, key, tenant string, rest []byte) {
		sp := &paddockv1.TaskSpec{}
		_ = proto.Unmarshal(rest, sp) // maps, requirements, input blobs: whatever decodes
		sp.Type, sp.Payload, sp.Priority, sp.Class = typ, payload, priority, paddockv1.Class(class)
		sp.TimeoutMs, sp.MaxAttempts, sp.IdempotencyKey, sp.Tenant = timeoutMs, maxAttempts, key, tenant
		before := proto.Clone(sp)
		got, err := s.validateSpec(sp)
		if !proto.Equal(before, sp) {
			t.Fatalf("validateSpec changed the spec it checked")
		}
		if err == nil { // the server's own call: the admin, who may name any tenant
			err = s.assignTenant(context.Background(), sp.GetTenant(), &got)
		}
		if err != nil {
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(ce.Message(), "task") {
				t.Fatalf("refusal %v: want an InvalidArgument naming the task field", err)
			}
			return
		}
		if !typeRE.MatchString(got.Type) || got.Type != typ {
			t.Errorf("accepted type %q (spec %q)", got.Type, typ)
		}
		size := len(got.Payload)
		for name, b := range got.Inputs {
			size += len(name) + len(b)
			if !guestabi.ValidName(name) {
				t.Errorf("accepted inline input name %q", name)
			}
		}
		if size > maxInline {
			t.Errorf("accepted %d inline bytes over the limit %d", size, maxInline)
		}
		if !bytes.Equal(got.Payload, payload) || !maps.EqualFunc(got.Inputs, sp.GetInputs(), bytes.Equal) {
			t.Errorf("payload or inputs changed")
		}
		if got.Priority < MinPriority || got.Priority > MaxPriority || got.Priority != int(priority) {
			t.Errorf("accepted priority %d (spec %d) outside %d..%d", got.Priority, priority, MinPriority, MaxPriority)
		}
		switch c := paddockv1.Class(class); {
		case c == paddockv1.Class_CLASS_ONLINE && got.Class == store.Online:
		case (c == paddockv1.Class_CLASS_UNSPECIFIED || c == paddockv1.Class_CLASS_BATCH) && got.Class == store.Batch:
		default:
			t.Errorf("class %v accepted as %v", c, got.Class)
		}
		switch {
		case timeoutMs == 0 && got.Timeout != s.cfg.DefaultTimeout:
			t.Errorf("timeout_ms 0 gave %v, not the default %v", got.Timeout, s.cfg.DefaultTimeout)
		case timeoutMs != 0 && (got.Timeout <= 0 || got.Timeout > MaxTimeout || got.Timeout.Milliseconds() != timeoutMs || got.Timeout%time.Millisecond != 0):
			t.Errorf("timeout_ms %d accepted as a timeout of %v (%d ms)", timeoutMs, got.Timeout, got.Timeout.Milliseconds())
		}
		if got.MaxAttempts < 1 || got.MaxAttempts > MaxMaxAttempts || maxAttempts != 0 && got.MaxAttempts != int(maxAttempts) {
			t.Errorf("max_attempts %d accepted as %d", maxAttempts, got.MaxAttempts)
		}
		if got.IdempotencyKey != key || key != "" && !keyRE.MatchString(key) {
			t.Errorf("idempotency key %q accepted as %q", key, got.IdempotencyKey)
		}
		if !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).MatchString(got.Tenant) || tenant != "" && got.Tenant != tenant || tenant == "" && got.Tenant != DefaultTenant {
			t.Errorf("tenant %q accepted as %q", tenant, got.Tenant)
		}
		if len(got.Inputs) > MaxInlineInputs {
			t.Errorf("accepted %d inline inputs, over %d", len(got.Inputs), MaxInlineInputs)
		}
		r := got.Requirements
		if len(r.Labels) > MaxLabels {
			t.Errorf("accepted %d labels, over %d", len(r.Labels), MaxLabels)
		}
		for k, v := range r.Labels {
			if k == "" || len(k) > MaxLabelKey || len(v) > MaxLabelValue {
				t.Errorf("accepted label %q=%q (key 1..%d bytes, value at most %d)", k, v, MaxLabelKey, MaxLabelValue)
			}
		}
		if r.CPUMillis < 0 || r.CPUMillis > MaxCPUMillis || r.MemoryBytes < 0 || r.MemoryBytes > MaxMemoryBytes || r.CPUMillis != sp.GetRequirements().GetCpuMillis() || r.MemoryBytes != sp.GetRequirements().GetMemoryBytes() ||
			!maps.Equal(r.Labels, sp.GetRequirements().GetLabels()) {
			t.Errorf("requirements %+v accepted as %+v", sp.GetRequirements(), r)
		}
	})
}
