package console

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Prefix is where the console is served on the client port.
const Prefix = "/ui"

// EventsPath is the feed of task changes (server-sent events; needs the token).
const EventsPath = Prefix + "/events"

// FeedKeepalive is how often the feed sends a comment when nothing changes, so proxies
// and the browser keep the stream open.
const FeedKeepalive = 15 * time.Second

//go:embed assets
var assets embed.FS

// Event is one event of the feed: Name is the SSE event name, Data its JSON.
type Event struct {
	Name string
	Data []byte
}

// Feed is the source of the live task changes: the server (package sched).
type Feed interface {
	// Subscribe returns every event from now on. The channel is closed when the
	// subscriber lags too far behind or the server stops; cancel ends the
	// subscription (and closes the channel). err refuses the subscription (too many
	// open): the page gets 429 with its text.
	Subscribe() (events <-chan Event, cancel func(), err error)
}

// Public reports whether path is one of the console's static assets, which need no
// token (the page, its script and its style: no data). The feed is not public.
func Public(path string) bool {
	return path == Prefix || path == Prefix+"/" || strings.HasPrefix(path, Prefix+"/assets/")
}

// Handles reports whether path is the console's (under Prefix).
func Handles(path string) bool { return path == Prefix || strings.HasPrefix(path, Prefix+"/") }

// securityHeaders are sent with every response of the console.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
}

// Handler serves the console under Prefix: the page at /ui/, its assets under
// /ui/assets/, and the feed at /ui/events. The caller checks the token for the feed
// (everything not Public) before this handler runs.
func Handler(feed Feed, log *slog.Logger) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // cannot happen: the directory is embedded
	}
	files := http.StripPrefix(Prefix+"/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		switch p := r.URL.Path; {
		case p == Prefix:
			http.Redirect(w, r, Prefix+"/", http.StatusMovedPermanently)
		case p == Prefix+"/":
			serveIndex(w, r)
		case strings.HasPrefix(p, Prefix+"/assets/") && !strings.HasSuffix(p, "/"): // no directory listings
			w.Header().Set("Cache-Control", "no-cache")
			files.ServeHTTP(w, r)
		case p == EventsPath:
			serveEvents(w, r, feed, log)
		default:
			http.Error(w, "not found: the console's pages are at "+Prefix+"/", http.StatusNotFound)
		}
	})
}

func serveIndex(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// serveEvents streams the feed as server-sent events until the client goes, the
// subscription is dropped (the client must resync) or the server stops.
func serveEvents(w http.ResponseWriter, r *http.Request, feed Feed, log *slog.Logger) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	rc := http.NewResponseController(w)
	events, cancel, err := feed.Subscribe()
	if err != nil { // too many open already
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	}
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The first line tells the page the stream is open (it then reloads what it shows,
	// so nothing changed between its last read and the subscription is missed).
	if _, err := w.Write([]byte("event: hello\ndata: {}\n\n")); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		log.Debug("console feed: cannot flush", "err", err)
		return
	}
	tick := time.NewTicker(FeedKeepalive)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			_, err = w.Write([]byte(": keepalive\n\n"))
		case ev, ok := <-events:
			if !ok {
				_, _ = w.Write([]byte("event: resync\ndata: {}\n\n"))
				_ = rc.Flush()
				return
			}
			err = writeEvent(w, ev)
			// Send what else is waiting in the same write burst.
			for n := len(events); err == nil && n > 0; n-- {
				ev, ok = <-events
				if !ok {
					break
				}
				err = writeEvent(w, ev)
			}
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

func writeEvent(w http.ResponseWriter, ev Event) error {
	// Data is JSON on one line (protojson never writes a newline in compact form).
	_, err := w.Write([]byte("event: " + ev.Name + "\ndata: " + strings.ReplaceAll(string(ev.Data), "\n", " ") + "\n\n"))
	return err
}
