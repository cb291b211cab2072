package hypervisor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
)

type subscriber struct {
	ch      chan Event
	dropped int
}

// Events subscribes to lifecycle events of prefixed domains; see Hypervisor.Events.
func (l *Libvirt) Events(ctx context.Context) (<-chan Event, error) {
	s := &subscriber{ch: make(chan Event, EventBuffer)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: subscribing to events: connection closed", ErrUnavailable)
	}
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-l.done:
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[s]; ok {
			delete(l.subs, s)
			close(s.ch)
		}
	}()
	return s.ch, nil
}

// onLifecycle runs on libvirt's event loop goroutine: it must not block.
func (l *Libvirt) onLifecycle(_ *libvirt.Connect, d *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
	name, err := d.GetName()
	if err != nil || !strings.HasPrefix(name, l.cfg.Prefix) {
		return
	}
	e := Event{Domain: name, Time: time.Now()}
	e.Type, e.Detail = lifecycle(ev)
	l.log.Debug("domain event", "domain", name, "event", string(e.Type), "detail", e.Detail)
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped++
			l.log.Warn("event subscriber is behind; dropped an event", "domain", name, "event", string(e.Type), "dropped_total", s.dropped)
		}
	}
}

func lifecycle(ev *libvirt.DomainEventLifecycle) (EventType, string) {
	switch ev.Event {
	case libvirt.DOMAIN_EVENT_DEFINED:
		return EventDefined, detail(ev.Detail, "added", "updated", "renamed", "from_snapshot")
	case libvirt.DOMAIN_EVENT_UNDEFINED:
		return EventUndefined, detail(ev.Detail, "removed", "renamed")
	case libvirt.DOMAIN_EVENT_STARTED:
		return EventStarted, detail(ev.Detail, "booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated")
	case libvirt.DOMAIN_EVENT_SUSPENDED:
		return EventSuspended, detail(ev.Detail, "paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error", "postcopy", "postcopy_failed")
	case libvirt.DOMAIN_EVENT_RESUMED:
		return EventResumed, detail(ev.Detail, "unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed")
	case libvirt.DOMAIN_EVENT_STOPPED:
		return EventStopped, detail(ev.Detail, "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot", "recreated")
	case libvirt.DOMAIN_EVENT_SHUTDOWN:
		return EventShutdown, detail(ev.Detail, "finished", "guest", "host")
	case libvirt.DOMAIN_EVENT_PMSUSPENDED:
		return EventPMSuspended, detail(ev.Detail, "memory", "disk")
	case libvirt.DOMAIN_EVENT_CRASHED:
		return EventCrashed, detail(ev.Detail, "panicked", "crashloaded")
	}
	return EventOther, fmt.Sprintf("event %d detail %d", ev.Event, ev.Detail)
}

func detail(i int, names ...string) string {
	if i >= 0 && i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("detail %d", i)
}
