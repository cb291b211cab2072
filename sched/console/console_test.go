package console_test

// The console in a real headless Chromium (chromedp) against a real server (package
// sched on a real SQLite file, real TCP ports, a client token) with a real agent
// (cmd/paddock-agent running the test handler plugin as a subprocess). Every page is
// saved as a screenshot in $PADDOCK_TEST_OUT/console (or the test's temporary
// directory). See doc.go for how to run it.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/internal/testutil"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/console"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

const (
	clientToken = "console-test-token"
	agentToken  = "console-test-agent-token"
	agentID     = "console-agent-1"
)

var bins struct {
	agent, handler string
	err            error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paddock-console-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := func(out, pkg string) string {
		p := filepath.Join(dir, out)
		if bins.err != nil {
			return p
		}
		cmd := exec.Command("go", "build", "-o", p, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("building %s: %v\n%s", pkg, err, b)
		}
		return p
	}
	bins.agent = build("paddock-agent", "github.com/paddockvm/paddock/cmd/paddock-agent")
	bins.handler = build("testhandler", "github.com/paddockvm/paddock/plugins/handlers/testhandler")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// chromium returns the path of a Chromium or Chrome, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	testutil.Skip(t, "no Chromium on PATH (the console's browser test drives a real headless Chromium)",
		"apt-get install -y chromium (or make setup)")
	return ""
}

// outDir is where screenshots go: $PADDOCK_TEST_OUT/console, or a temporary directory.
func outDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("PADDOCK_TEST_OUT"); d != "" {
		d = filepath.Join(d, "console")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

type env struct {
	url       string
	agentAddr string
	tasks     paddockv1connect.TaskServiceClient
	cluster   paddockv1connect.ClusterServiceClient
	tenants   paddockv1connect.TenantServiceClient
}

// startServer runs a server with a client token and an agent token on a real SQLite
// file until the test ends.
func startServer(t *testing.T) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blob.OpenFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := sched.Config{Token: clientToken, AgentToken: agentToken, Blobs: blobs, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	srv, err := sched.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx, al, cl); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	url := "http://" + cl.Addr().String()
	auth := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+clientToken)
			return next(ctx, req)
		}
	}))
	return &env{url: url, agentAddr: al.Addr().String(), tasks: paddockv1connect.NewTaskServiceClient(http.DefaultClient, url, auth),
		cluster: paddockv1connect.NewClusterServiceClient(http.DefaultClient, url, auth),
		tenants: paddockv1connect.NewTenantServiceClient(http.DefaultClient, url, auth)}
}

// startAgent runs cmd/paddock-agent with the test handler until the test ends. The
// channel is closed if it exits.
func startAgent(t *testing.T, addr string) <-chan struct{} {
	t.Helper()
	if bins.err != nil {
		t.Fatalf("test binaries: %v", bins.err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.agent, "-server", addr, "-id", agentID, "-token", agentToken, "-data-dir", t.TempDir(),
		"-handler", "testhandler="+bins.handler)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("agent log:\n%s", b)
		}
	})
	return done
}

// waitAgent waits until the agent is connected and serves test.sleep.
func (e *env) waitAgent(t *testing.T, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("agent %s exited", agentID)
		default:
		}
		r, err := e.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.Msg.GetAgents() {
			for _, ty := range a.GetTypes() {
				if a.GetId() == agentID && a.GetState() == "connected" && ty.GetName() == "test.sleep" {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("agent %s not connected with type test.sleep after 2 min", agentID)
}

func (e *env) submit(t *testing.T, typ, payload string) string {
	t.Helper()
	r, err := e.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{
		Type: typ, Payload: []byte(payload), MaxAttempts: 1}}))
	if err != nil {
		t.Fatalf("submit %s: %v", typ, err)
	}
	return r.Msg.GetTask().GetId()
}

// putBlob uploads b to the server's blob store and returns its digest.
func (e *env) putBlob(t *testing.T, b []byte) string {
	t.Helper()
	d := string(blob.FromBytes(b))
	req, err := http.NewRequest(http.MethodPut, e.url+"/v1/blobs/"+d, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+clientToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("PUT blob %s: %s", d, res.Status)
	}
	return d
}

func (e *env) get(t *testing.T, id string) *paddockv1.Task {
	t.Helper()
	r, err := e.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return r.Msg.GetTask()
}

func (e *env) wait(t *testing.T, id string) *paddockv1.Task {
	t.Helper()
	r, err := e.tasks.Wait(context.Background(), connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: (2 * time.Minute).Milliseconds()}))
	if err != nil || !r.Msg.GetTerminal() {
		t.Fatalf("wait %s: %v (terminal %v)", id, err, r.Msg.GetTerminal())
	}
	return r.Msg.GetTask()
}

// tab is one Chromium tab with the console errors it logged. Downloads go to
// downloads.
type tab struct {
	ctx       context.Context
	downloads string
	mu        sync.Mutex
	errors    []string
}

func newBrowser(t *testing.T, execPath string) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(execPath), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("starting Chromium %s: %v", execPath, err)
	}
	b := &tab{ctx: ctx, downloads: t.TempDir()}
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: b.downloads}); err != nil {
		t.Fatalf("allowing downloads: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch {
			case m.Type == chromedp.ConsoleException:
				b.logError("exception: " + m.Text + " at " + m.URL)
			case m.Type != chromedp.ConsoleError:
			case m.Source == "network" && strings.Contains(m.Text, "status of 401"):
				// The refused sign-in the test makes on purpose (and the first Status a
				// page sends before it has a token): the browser logs the 401.
			case m.Source == "network" && strings.Contains(m.Text, "status of 404") &&
				(strings.HasSuffix(m.URL, "/paddock.v1.TaskService/Get") || strings.HasSuffix(m.URL, "/paddock.v1.TaskService/Explain")):
				// The task that does not exist, opened on purpose (the page says so:
				// the test checks #not-found).
			default:
				b.logError("console error: " + m.Text + " at " + m.URL)
			}
		}
	}()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs { // accept "Cancel task …?"
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return b
}

func (b *tab) logError(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

func (b *tab) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// stepTimeout bounds one step of the test (a loaded machine is slow).
const stepTimeout = 2 * time.Minute

// do runs actions in the tab, failing the test with the page's HTML on an error.
func (b *tab) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(t, what, err)
	}
}

func (b *tab) fail(t *testing.T, what string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("#main")))
	t.Fatalf("%s: %v\npage:\n%.4000s\nconsole errors: %q", what, err, html, b.consoleErrors())
}

// text returns the visible text of the element sel.
func (b *tab) text(t *testing.T, sel string) string {
	t.Helper()
	return run(t, b, "reading "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// eval returns the value of a JavaScript expression.
func eval[T any](t *testing.T, b *tab, expr string) T {
	t.Helper()
	return run(t, b, "evaluating "+expr, chromedp.Evaluate[T](expr))
}

func run[T any](t *testing.T, b *tab, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(t, what, err)
	}
	return v
}

// screenshot saves the whole page as dir/name.png.
func (b *tab) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	b.do(t, "settling before "+name, chromedp.Sleep(300*time.Millisecond))
	png := run(t, b, "screenshot "+name, chromedp.FullScreenshot(100))
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// downloaded waits for the browser to save a file name with content want.
func (b *tab) downloaded(t *testing.T, name string, want []byte) {
	t.Helper()
	p := filepath.Join(b.downloads, name)
	deadline := time.Now().Add(stepTimeout)
	for time.Now().Before(deadline) {
		got, err := os.ReadFile(p)
		if err == nil && len(got) == len(want) {
			if !bytes.Equal(got, want) {
				t.Fatalf("downloaded %s: %d bytes differ from what the server holds", name, len(got))
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, _ := os.ReadDir(b.downloads)
	t.Fatalf("download %s: not saved after %v (downloads: %v; console errors %q)", name, stepTimeout, entries, b.consoleErrors())
}

func goTo(hash string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q", hash))
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(stepTimeout))
}

func TestConsole(t *testing.T) {
	exe := chromium(t)
	e := startServer(t)
	dir := outDir(t)
	e.waitAgent(t, startAgent(t, e.agentAddr))
	b := newBrowser(t, exe)
	ui := e.url + console.Prefix + "/"

	// A wrong token is refused and shows no data.
	b.do(t, "sign in with a wrong token",
		chromedp.Navigate(ui),
		visible("#login-form"),
		chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		poll(`document.querySelector("#login-error").textContent.includes("wrong bearer token")`))
	if n := eval[int](t, b, `document.querySelector("#view").childElementCount`); n != 0 {
		t.Errorf("after a wrong token the page shows %d elements of data", n)
	}
	b.screenshot(t, dir, "01-login-refused")

	// The right token: the overview shows the agent and its slots.
	b.do(t, "sign in and see the overview",
		chromedp.SendKeys(chromedp.CSS("#token"), clientToken),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		visible(`#agents tr[data-agent="`+agentID+`"]`))
	if agents := b.text(t, "#agents"); !strings.Contains(agents, "test.sleep") || !strings.Contains(agents, "slots") {
		t.Errorf("agents table lacks the agent's types and slots: %q", agents)
	}
	if stored := eval[string](t, b, `sessionStorage.getItem("paddock.token") || ""`); stored != clientToken {
		t.Errorf("sessionStorage holds %q, want the token", stored)
	}
	b.screenshot(t, dir, "02-overview")

	// The task list updates live: a task submitted through the API appears and runs
	// without a reload (a marker set on window survives only if the page is not reloaded).
	b.do(t, "open the task list",
		goTo("#/tasks"),
		visible("#tasks"),
		visible("#live.on"),
		chromedp.Evaluate[chromedp.Void](`window.__noReload = 1`))
	long := e.submit(t, "test.sleep", "10m")
	b.do(t, "see the submitted task appear and start",
		visible(`#task-rows tr[data-id="`+long+`"]`),
		visible(`#task-rows tr[data-id="`+long+`"][data-state="running"]`))
	echo := e.submit(t, "test.echo", "hello from the console test")
	b.do(t, "see a second task succeed",
		visible(`#task-rows tr[data-id="`+echo+`"][data-state="succeeded"]`))
	if marker := eval[int](t, b, `window.__noReload || 0`); marker != 1 {
		t.Errorf("the task list reloaded the page to show new tasks")
	}
	b.screenshot(t, dir, "03-tasks")

	// Filters: state=running shows the long task and not the finished one.
	b.do(t, "filter by state",
		goTo("#/tasks?state=RUNNING&type=test.sleep"),
		visible(`#task-rows tr[data-id="`+long+`"]`),
		chromedp.WaitNotPresent(chromedp.CSS(`#task-rows tr[data-id="`+echo+`"]`)))

	// Why is it still queued: a type nobody serves.
	orphan := e.submit(t, "nobody.serves.this", "x")
	b.do(t, "explain a queued task",
		goTo("#/task/"+orphan),
		visible(`#why li[data-kind="no_server"]`))
	if why := b.text(t, "#why"); !strings.Contains(why, "nobody.serves.this") || !strings.Contains(why, "test.sleep") {
		t.Errorf("explanation names neither the type nor the types served: %q", why)
	}
	b.screenshot(t, dir, "04-task-queued")

	// Cancel from the page stops the running task.
	b.do(t, "cancel the running task",
		goTo("#/task/"+long),
		visible(`#task-state .state.running`),
		chromedp.Click(chromedp.CSS("#cancel")),
		visible(`#task-state .state.cancelled`))
	if got := e.get(t, long); got.GetState() != paddockv1.State_STATE_CANCELLED {
		t.Errorf("after Cancel on the page the task is %v, want CANCELLED", got.GetState())
	}
	if attempts := b.text(t, "#attempts"); !strings.Contains(attempts, "cancelled") {
		t.Errorf("attempts table of the cancelled task: %q", attempts)
	}
	b.screenshot(t, dir, "05-task-cancelled")

	// Retry submits the spec again as a new task and opens it.
	b.do(t, "retry the cancelled task",
		chromedp.Click(chromedp.CSS("#retry")),
		poll(fmt.Sprintf(`document.querySelector("#task-id") && document.querySelector("#task-id").textContent !== %q`, long)))
	newID := b.text(t, "#task-id")
	nt := e.get(t, newID)
	if nt.GetSpec().GetType() != "test.sleep" || string(nt.GetSpec().GetPayload()) != "10m" {
		t.Errorf("the retry is %v, want test.sleep with payload 10m", nt.GetSpec())
	}
	if _, err := e.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: newID})); err != nil {
		t.Fatal(err)
	}

	// Output: short text inline; a large output offered as a download.
	e.wait(t, echo)
	b.do(t, "show a short output",
		goTo("#/task/"+echo),
		visible(`#output pre`),
		visible(`#attempts`))
	if out := b.text(t, "#output pre"); out != "hello from the console test" {
		t.Errorf("output shown %q", out)
	}
	b.screenshot(t, dir, "06-task-succeeded")
	big := e.submit(t, "test.big", "200000")
	if got := e.wait(t, big); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("test.big ended %v: %s", got.GetState(), got.GetError())
	}
	b.do(t, "offer a large output as a download",
		goTo("#/task/"+big),
		visible(`#output .too-large button.download`))
	if offer := b.text(t, "#output"); !strings.Contains(offer, "too large") {
		t.Errorf("large output: %q", offer)
	}
	b.screenshot(t, dir, "07-task-large-output")
	b.do(t, "download the large output", chromedp.Click(chromedp.CSS(`#output button.download`)))
	b.downloaded(t, "output-"+big, bytes.Repeat([]byte("x"), 200000))

	// Logs: a running task's log line appears and the page follows it live; a line that
	// looks like HTML is shown as text, never run. test.logwait logs "waiting for
	// <payload>" and blocks until that file exists.
	release := filepath.Join(t.TempDir(), `<img src=x onerror="window.__pwned=1">`)
	logwait := e.submit(t, "test.logwait", release)
	b.do(t, "show a running task's log line",
		goTo("#/task/"+logwait),
		poll(`(document.querySelector("#logs pre.log") || {textContent: ""}).textContent.includes("waiting for")`))
	if st := e.get(t, logwait).GetState(); st != paddockv1.State_STATE_RUNNING && st != paddockv1.State_STATE_LEASED {
		t.Fatalf("test.logwait is %v while its handler waits; want running", st)
	}
	if got := b.text(t, "#logs pre.log"); !strings.Contains(got, "INFO  waiting for "+release) {
		t.Errorf("log shown %q; want the line with its HTML-looking text as text", got)
	}
	if got := b.text(t, "#logs"); strings.Contains(got, "null") || strings.Contains(got, "undefined") {
		t.Errorf("logs section shows %q", got)
	}
	if n := eval[int](t, b, `document.querySelectorAll("#logs img, #logs script").length`); n != 0 {
		t.Errorf("the log line's HTML became %d elements", n)
	}
	if pwned := eval[bool](t, b, `window.__pwned === 1`); pwned {
		t.Error("the log line's HTML ran")
	}
	b.screenshot(t, dir, "08-task-live-log")
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.do(t, "follow the log to the task's end",
		poll(`(document.querySelector("#logs pre.log") || {textContent: ""}).textContent.includes("released")`),
		poll(`document.querySelector("#task-state").textContent.toLowerCase().includes("succeeded")`))

	// An input blob is listed and downloads (GET /v1/blobs with the bearer token).
	data := []byte("an input blob of the console test\n")
	digest := e.putBlob(t, data)
	r, err := e.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{
		Type: "test.echo", Payload: []byte("with a blob"), InputBlobs: map[string]*paddockv1.BlobRef{"data.txt": {Digest: digest}}}}))
	if err != nil {
		t.Fatalf("submit with an input blob: %v", err)
	}
	withBlob := r.Msg.GetTask().GetId()
	e.wait(t, withBlob)
	b.do(t, "show an input blob",
		goTo("#/task/"+withBlob),
		visible(`#inputs button`))
	if in := b.text(t, "#inputs"); !strings.Contains(in, "data.txt") {
		t.Errorf("inputs table: %q", in)
	}
	b.do(t, "download the input blob", chromedp.Click(chromedp.CSS(`#inputs button`)))
	b.downloaded(t, "data.txt", data)

	// A task id that does not exist.
	b.do(t, "open a task that does not exist",
		goTo("#/task/no-such-task"),
		visible("#not-found"))
	b.screenshot(t, dir, "09-task-not-found")

	// Charts of the last hour.
	b.do(t, "charts",
		goTo("#/charts"),
		visible(`#chart-throughput svg polyline`),
		visible(`#chart-queue svg polyline`),
		visible(`#chart-latency svg polyline`))
	if lines := eval[int](t, b, `document.querySelectorAll(".chart polyline").length`); lines != 7 {
		t.Errorf("charts draw %d series, want 7", lines)
	}
	b.screenshot(t, dir, "10-charts")

	// A tenant's token: the overview shows the queues, not the hosts, guests and agents
	// (ListHosts, ListVMs and ListAgents need an admin token), and no error.
	tok, err := e.tenants.CreateToken(context.Background(), connect.NewRequest(&paddockv1.CreateTokenRequest{Tenant: "acme"}))
	if err != nil {
		t.Fatalf("creating acme's token: %v", err)
	}
	b.do(t, "sign in with a tenant's token",
		chromedp.Click(chromedp.CSS("#logout")),
		visible("#login-form"),
		chromedp.SendKeys(chromedp.CSS("#token"), tok.Msg.GetToken()),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		goTo("#/"),
		visible("#tenant-view"),
		visible("#queues"))
	if n := eval[int](t, b, `document.querySelectorAll("#hosts, #agents, .guests, #view .error").length`); n != 0 {
		t.Errorf("a tenant's overview shows %d host, agent, guest or error elements: %q", n, b.text(t, "#view"))
	}
	b.screenshot(t, dir, "11-tenant-overview")

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the console logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestConsoleAuth checks the server side of the console's access rules without a
// browser: the page is public (and carries no data), the feed needs the token.
func TestConsoleAuth(t *testing.T) {
	e := startServer(t)
	get := func(path, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"page without token", "/ui/", "", http.StatusOK},
		{"script without token", "/ui/assets/app.js", "", http.StatusOK},
		{"feed without token", "/ui/events", "", http.StatusUnauthorized},
		{"feed with a wrong token", "/ui/events", "wrong", http.StatusUnauthorized},
		{"feed with the token", "/ui/events", clientToken, http.StatusOK},
		{"unknown console path", "/ui/nope", clientToken, http.StatusNotFound},
		{"no listing of the assets", "/ui/assets/", clientToken, http.StatusNotFound},
		{"unknown console path without token", "/ui/nope", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := get(tc.path, tc.token)
			if res.StatusCode != tc.want {
				t.Fatalf("GET %s: %d, want %d", tc.path, res.StatusCode, tc.want)
			}
			if csp := res.Header.Get("Content-Security-Policy"); res.StatusCode == http.StatusOK && !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
			}
		})
	}
}
