// Package console is Paddock's web console: a small single-page app served by the
// server on its client port under /ui, with its HTML, JavaScript and CSS embedded in
// the binary (nothing is loaded from anywhere else; a Content-Security-Policy allows
// only the server's own origin), and the live feed of task changes /ui/events.
//
// Pages (hash routes, so no task id or token ever reaches the server in a URL path or
// query of a page load):
//
//   - #/ overview: hosts with CPU, memory and NIC load, guests per pool with their state,
//     agents with their slots per type, queue depth and delay per type;
//   - #/tasks: the task list with filters (state, type, tenant), updated live from the feed;
//   - #/task/<id>: one task: why it is still queued (TaskService.Explain), its spec,
//     attempts with errors and usage, inputs, output (shown inline when short and text,
//     otherwise offered as a download), outputs and blobs (downloads), Cancel and Retry,
//     and the handler's log of each attempt (TaskService.Logs), following a running
//     task live: the feed's "log" event says new lines arrived, and the page reads
//     them at most every 250 ms (lines are put in the page as text, never as HTML);
//   - #/charts: throughput, queue depth and submit-to-start latency over the last hour
//     (ClusterService.History: 10 s samples kept by the server), drawn as inline SVG.
//
// Authentication: the console uses the client token like any other client. The login
// form keeps it in the browser tab's sessionStorage (gone when the tab closes; never in
// a cookie, never in a URL) and the page sends it as "Authorization: Bearer <token>" on
// every call: the connect JSON API (POST /paddock.v1.TaskService/List, ...), blob
// downloads (GET /v1/blobs/<digest>) and the feed, which the page reads with fetch
// rather than EventSource (EventSource cannot send headers). The static assets (Public)
// need no token; they carry no data. Everything else is refused without it (the
// server's guard, before the handler runs). In dev mode the server checks no token and
// the login form is skipped.
//
// The feed (/ui/events) is server-sent events: "event: task" with the task as the JSON
// API's List shows it, on every change the server makes (a submit, a lease, an ack, a
// report, an expiry, a cancel); "event: log" with {"id", "attempt"} when lines of a
// task's attempt were stored (an agent's LogChunk, or a report; the lines themselves
// never travel on the feed); a comment every FeedKeepalive; "event: resync" and the
// end of the stream when the subscriber fell too far behind or the server stops (the
// page reloads its list and reconnects). Views other than the task list refresh on a
// timer only while shown (the overview every 5 s, the charts every 10 s, a queued
// task's explanation every 5 s); the task list never polls.
//
// Tests: console_test.go drives a real headless Chromium (Debian's chromium package,
// through chromedp) against a real server on a real SQLite file with a real agent
// (cmd/paddock-agent running the test handler plugin), and saves a screenshot of every
// page to $PADDOCK_TEST_OUT (or the test's temporary directory):
//
//	apt-get install -y chromium   # or: make setup
//	go test -count=1 -v ./sched/console/
//
// Without chromium the test skips, saying so; with PADDOCK_REQUIRE_VM=1 it fails.
package console
