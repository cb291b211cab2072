package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/internal/config"
)

// serverURLs returns client.server as a list of base URLs (one, or several server
// replicas given as a YAML list or separated by commas), without trailing slashes.
func serverURLs(app *App) []string {
	var out []string
	for _, u := range config.List(app.Cfg.V, "client.server") {
		out = append(out, strings.TrimRight(u, "/"))
	}
	if len(out) == 0 {
		out = []string{""} // the request fails and says so
	}
	return out
}

// failover dials the client API of one of several server replicas: each new
// connection goes to the server that answered last, else to the next that answers
// (the first at a random one), so a command keeps working while one replica is down.
// Requests already sent to a replica that dies fail: a submit is not sent twice
// behind the caller's back (give an idempotency key and retry).
type failover struct {
	hosts []string // host:port of each server
	mu    sync.Mutex
	cur   int
}

// newFailover returns a failover over base URLs, or an error naming client.server.
func newFailover(urls []string) (*failover, error) {
	f := &failover{}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("client.server: %q is not a URL; give http://host:port, or several separated by commas", raw)
		}
		host := u.Host
		if u.Port() == "" {
			port := "80"
			if u.Scheme == "https" {
				port = "443"
			}
			host = net.JoinHostPort(u.Hostname(), port)
		}
		f.hosts = append(f.hosts, host)
	}
	f.cur = rand.IntN(len(f.hosts))
	return f, nil
}

// dial implements http.Transport.DialContext: the address asked for (the first
// server's) is replaced by the servers in turn.
func (f *failover) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	f.mu.Lock()
	start := f.cur
	f.mu.Unlock()
	var d net.Dialer
	var errs []error
	for i := range f.hosts {
		k := (start + i) % len(f.hosts)
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := d.DialContext(actx, network, f.hosts[k])
		cancel()
		if err == nil {
			f.mu.Lock()
			f.cur = k
			f.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("no server of client.server answered: %w", errors.Join(errs...))
}

// serverHTTP returns the HTTP client and the base URL for the client API: with one
// server, a plain client; with several, one whose connections fail over (failover).
// timeout 0: none.
func serverHTTP(app *App, timeout time.Duration) (*http.Client, string) {
	urls := serverURLs(app)
	hc := &http.Client{Timeout: timeout}
	if len(urls) == 1 {
		return hc, urls[0]
	}
	f, err := newFailover(urls)
	if err != nil {
		// Requests to the malformed list fail with this error.
		hc.Transport = errTransport{err}
		return hc, urls[0]
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = f.dial
	hc.Transport = tr
	return hc, urls[0]
}

type errTransport struct{ err error }

func (e errTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, e.err }

// listEach calls list on the client API of every server in client.server (each
// replica lists the agents and hosts connected to it) and returns what they answered,
// in order. A replica that does not answer is named on app.Err; it is an error only
// when none answers.
func listEach[T any](ctx context.Context, app *App, list func(context.Context, paddockv1connect.ClusterServiceClient) ([]T, error)) ([]T, error) {
	urls := serverURLs(app)
	if len(urls) == 1 {
		_, cc := clients(app)
		return list(ctx, cc)
	}
	var out []T
	var errs []error
	for _, u := range urls {
		_, cc := clientsAt(&http.Client{Timeout: 30 * time.Second}, u, app.Cfg.V.GetString("client.token"))
		got, err := list(ctx, cc)
		if err != nil {
			fmt.Fprintf(app.Err, "server %s: %v\n", u, err)
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		out = append(out, got...)
	}
	if len(errs) == len(urls) {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// connectedFirst orders rows by id, a connected one before lost ones of the same id,
// and drops those lost ones (an agent or host that moved to another replica is listed
// connected there and lost on the one it left).
func connectedFirst[T any](rows []T, id func(T) string, connected func(T) bool) []T {
	sort.SliceStable(rows, func(i, j int) bool {
		if id(rows[i]) != id(rows[j]) {
			return id(rows[i]) < id(rows[j])
		}
		return connected(rows[i]) && !connected(rows[j])
	})
	var out []T
	for i, r := range rows {
		if i > 0 && id(rows[i-1]) == id(r) && !connected(r) && connected(out[len(out)-1]) {
			continue
		}
		out = append(out, r)
	}
	return out
}
