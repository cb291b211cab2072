package sched

import (
	"testing"

	"github.com/paddockvm/paddock/sched/store"
)

// TestOnlineHint: only an online task left queued hints its type for preemptForOnline,
// and a look that found none clears the hint unless another online task was queued
// since that look began.
func TestOnlineHint(t *testing.T) {
	s := &Server{onlineGen: typeHints{}}
	for _, tk := range []store.Task{
		{Type: "echo", State: store.Queued, Class: store.Batch},
		{Type: "echo", State: store.Leased, Class: store.Online},
		{Type: "echo", State: store.Succeeded, Class: store.Online},
	} {
		s.queuedOnline(tk)
	}
	if _, ok := s.onlineHint("echo"); ok {
		t.Fatal("a batch task queued, or an online task not queued, hinted its type")
	}
	s.queuedOnline(store.Task{Type: "echo", State: store.Queued, Class: store.Online})
	gen, ok := s.onlineHint("echo")
	if !ok {
		t.Fatal("an online task queued did not hint its type")
	}
	s.queuedOnline(store.Task{Type: "echo", State: store.Queued, Class: store.Online}) // queued during the look
	s.clearOnline("echo", gen)
	if _, ok := s.onlineHint("echo"); !ok {
		t.Fatal("a look that began before an online task was queued cleared its hint")
	}
	gen, _ = s.onlineHint("echo")
	s.clearOnline("echo", gen)
	if _, ok := s.onlineHint("echo"); ok {
		t.Fatal("a look that found no online task ready left the hint")
	}
}
