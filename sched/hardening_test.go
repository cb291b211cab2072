package sched_test

import (
	"context"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
	"google.golang.org/protobuf/proto"
)

// TestLeaseSecretRequired: a second session that knows an agent's id and guesses its
// lease id (a counter) cannot ack, renew or settle that agent's task without the lease
// secret of the Assign; the refusals do not name the holder's lease or agent.
func TestLeaseSecretRequired(t *testing.T) {
	ts := startServer(t, fastConfig())
	victim := dialRawAgent(t, ts, "victim", "secret.t")
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "secret.t"}).GetId()
	as := victim.assign(t) // acked with the secret
	if as.GetLeaseSecret() == "" || len(as.GetLeaseSecret()) < 32 {
		t.Fatalf("Assign.lease_secret = %q, want a random secret", as.GetLeaseSecret())
	}
	// Another agent guessing the lease: superseded, without naming the holder.
	thief := dialRawAgent(t, ts, "thief", "other.t")
	forged := success(as, nil)
	forged.LeaseSecret = ""
	ack := thief.report(t, forged)
	if ack.GetOutcome() == agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("a report by another agent was accepted")
	}
	if strings.Contains(ack.GetError(), "victim") {
		t.Fatalf("the refusal names the task's agent: %q", ack.GetError())
	}
	// The same agent id from a second session (it replaces the first), without the
	// secret: refused.
	impostor := dialRawAgent(t, ts, "victim", "secret.t")
	for _, secret := range []string{"", "0123456789abcdef0123456789abcdef"} {
		forged.LeaseSecret = secret
		ack = impostor.report(t, forged)
		if ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED || !strings.Contains(ack.GetError(), "lease_secret") {
			t.Fatalf("report with lease secret %q: %v %q; want REJECTED naming lease_secret", secret, ack.GetOutcome(), ack.GetError())
		}
	}
	tk, err := ts.srv.Store().Get(context.Background(), id)
	if err != nil || tk.State.Terminal() {
		t.Fatalf("task after forged reports: %+v, %v; want still live", tk, err)
	}
	// With the secret it is settled.
	forged.LeaseSecret = as.GetLeaseSecret()
	if ack = impostor.report(t, forged); ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("report with the secret: %v %q", ack.GetOutcome(), ack.GetError())
	}
}

// TestLeaseSecretOnBlobRPCs: ReadBlob and WriteBlob need the lease secret too.
func TestLeaseSecretOnBlobRPCs(t *testing.T) {
	cfg := fastConfig()
	cfg.Blobs = openFS(t)
	ts := startServer(t, cfg)
	d := putBlob(t, cfg.Blobs, "input bytes!")
	a := dialRawAgent(t, ts, "ag", "blob.t")
	submit(t, ts, &paddockv1.TaskSpec{Type: "blob.t", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(d)}}})
	as := a.assign(t)
	if _, err := a.read("ag", as, string(d), 0); err != nil {
		t.Fatalf("read with the secret: %v", err)
	}
	noSecret := proto.Clone(as).(*agentv1.Assign)
	noSecret.LeaseSecret = ""
	if _, err := a.read("ag", noSecret, string(d), 0); err == nil || !strings.Contains(err.Error(), "lease_secret") {
		t.Fatalf("read without the secret: %v; want refused naming lease_secret", err)
	}
	if err := a.write(noSecret, "out", []byte("x"), 1); err == nil || !strings.Contains(err.Error(), "lease_secret") {
		t.Fatalf("write without the secret: %v; want refused naming lease_secret", err)
	}
}

var _ = sched.ProtocolVersion
var _ = time.Second
