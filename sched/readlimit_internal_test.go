package sched

import (
	"testing"

	"github.com/paddockvm/paddock/sched/tenant"
)

// TestReadLimit: a round reads as many ready tasks as there are free slots, up to
// maxRound (not maxScan: 4,000 free slots are filled by one round, not four); further
// (up to maxScan) after rounds passed over tasks no agent could take; 2f+8 (up to
// maxScan) with tenants.
func TestReadLimit(t *testing.T) {
	tests := []struct {
		name    string
		free    int
		scan    int
		tenants bool
		want    int
	}{
		{name: "few free slots", free: 4, want: 4},
		{name: "more free slots than maxScan", free: 3000, want: 3000},
		{name: "more free slots than maxRound", free: 10000, want: maxRound},
		{name: "scanning past unplaceable tasks", free: 4, scan: 64, want: 64},
		{name: "scan bounded by maxScan", free: 4, scan: 5000, want: maxScan},
		{name: "free slots beyond the scan", free: 2000, scan: 64, want: 2000},
		{name: "tenants read 2f+8", free: 10, tenants: true, want: 28},
		{name: "tenants: 2f+8 bounded by maxScan", free: 800, tenants: true, want: maxScan},
		{name: "tenants: free slots beyond maxScan", free: 1500, tenants: true, want: 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{agents: newAgentRegistry()}
			if tt.scan > 0 {
				s.agents.scan["w"] = tt.scan
			}
			if tt.tenants {
				s.cfg.Tenants = tenant.Config{"a": {Weight: 1}}
			}
			if got := s.readLimit("w", tt.free); got != tt.want {
				t.Fatalf("readLimit(%d free, scan %d, tenants %v) = %d, want %d", tt.free, tt.scan, tt.tenants, got, tt.want)
			}
		})
	}
}
