package agent_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// goBuild builds pkg (CGO_ENABLED=0, as shipped) into dir and returns the binary.
func goBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestStreamDataPathRealAgent runs the real paddock-agent binary over TCP against an
// in-process server with a filesystem blob store, and the testfiles handler as a
// real subprocess: the agent fetches the task's 3 MiB input blob with ReadBlob into
// its --data-dir, the handler copies it (and an inline input) to output files, the
// agent stores them with WriteBlob, the task ends with output blobs the store holds
// byte for byte, and the agent's data directory is empty again afterwards.
func TestStreamDataPathRealAgent(t *testing.T) {
	dir := t.TempDir()
	agentBin := goBuild(t, dir, "github.com/paddockvm/paddock/cmd/paddock-agent")
	handlerBin := goBuild(t, dir, "github.com/paddockvm/paddock/plugins/handlers/testfiles")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blobs, err := blob.OpenFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := sched.New(sched.Config{Dev: true, Blobs: blobs, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, st)
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
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx, al, cl) }()
	defer func() {
		cancel()
		if err := <-srvDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("server: %v", err)
		}
	}()

	input := make([]byte, 3<<20+7)
	for i := range input {
		input[i] = byte(i*31 + i>>9)
	}
	d := blob.FromBytes(input)
	if _, err := blobs.Put(ctx, d, int64(len(input)), bytes.NewReader(input)); err != nil {
		t.Fatal(err)
	}

	dataDir := filepath.Join(dir, "agent-data")
	var logs bytes.Buffer
	agent := exec.Command(agentBin, "-config", filepath.Join(dir, "none.json"), "-server", al.Addr().String(), "-id", "stream-agent",
		"-handler", "testfiles="+handlerBin, "-data-dir", dataDir)
	os.WriteFile(filepath.Join(dir, "none.json"), []byte(`{}`), 0o644)
	agent.Stdout, agent.Stderr = &logs, &logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()

	tasks := paddockv1connect.NewTaskServiceClient(http.DefaultClient, "http://"+cl.Addr().String())
	sub, err := tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "files.copy", MaxAttempts: 1,
		Inputs: map[string][]byte{"note": []byte("inline")}, InputBlobs: map[string]*paddockv1.BlobRef{"data": {Digest: string(d)}}}}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := tasks.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: sub.Msg.GetTask().GetId(), TimeoutMs: 60_000}))
	if err != nil {
		t.Fatal(err)
	}
	tk := w.Msg.GetTask()
	if tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("task = %v, want succeeded", tk)
	}
	outs := tk.GetOutputBlobs()
	if got := outs["data"]; got.GetDigest() != string(d) || got.GetSize() != int64(len(input)) {
		t.Fatalf("output blob data = %v, want the input's %s (%d bytes)", got, d, len(input))
	}
	if got := outs["note"]; got.GetDigest() != string(blob.FromBytes([]byte("inline"))) {
		t.Fatalf("output blob note = %v, want the inline input as a file", got)
	}
	for name, ref := range outs {
		rc, err := blobs.Open(ctx, blob.Digest(ref.GetDigest()), 0)
		if err != nil {
			t.Fatalf("output %s is not in the blob store: %v", name, err)
		}
		rc.Close()
	}
	if !strings.Contains(string(tk.GetOutput()), `"data":3145735`) {
		t.Fatalf("handler output %s: the handler did not read the whole input file", tk.GetOutput())
	}
	for i := 0; ; i++ { // the lease's directory goes once the report is acknowledged
		ents, err := os.ReadDir(dataDir)
		if err != nil {
			t.Fatalf("the agent's data dir: %v", err)
		}
		if len(ents) == 0 {
			break
		}
		if i == 500 {
			t.Fatalf("the agent's data dir still holds %v after the task ended", ents)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
