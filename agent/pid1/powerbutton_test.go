//go:build linux

package pid1

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// inputEvent encodes one struct input_event as the kernel writes it.
func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventSize)
	b[0] = 0xAA // a non-zero timestamp
	off := inputEventSize - 8
	binary.NativeEndian.PutUint16(b[off:], typ)
	binary.NativeEndian.PutUint16(b[off+2:], code)
	binary.NativeEndian.PutUint32(b[off+4:], uint32(value))
	return b
}

func TestFindPowerButtons(t *testing.T) {
	sys := t.TempDir()
	for ev, name := range map[string]string{"event0": "AT Translated Set 2 keyboard", "event1": "Power Button", "event3": "Power Button"} {
		dir := filepath.Join(sys, "class", "input", ev, "device")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FindPowerButtons(context.Background(), sys)
	if want := []string{"/dev/input/event1", "/dev/input/event3"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("FindPowerButtons = %v, %v; want %v", got, err, want)
	}

	empty := t.TempDir()
	kbd := filepath.Join(empty, "class", "input", "event0", "device")
	os.MkdirAll(kbd, 0o755)
	os.WriteFile(filepath.Join(kbd, "name"), []byte("AT Translated Set 2 keyboard\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = FindPowerButtons(ctx, empty)
	for _, want := range []string{"AT Translated Set 2 keyboard", "button", "evdev", "acpi"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("FindPowerButtons without a button = %v, want an error mentioning %q", err, want)
		}
	}
}

// TestWatchKeyPower feeds a stream of events (split at odd offsets, as reads may be)
// and checks that only KEY_POWER presses (not releases, other keys or EV_SYN) count.
func TestWatchKeyPower(t *testing.T) {
	var stream bytes.Buffer
	for _, ev := range [][3]int{
		{evKey, 30, 1},       // KEY_A press
		{evKey, keyPower, 1}, // press
		{0, 0, 0},            // EV_SYN
		{evKey, keyPower, 0}, // release
		{0, 0, 0},            // EV_SYN
		{evKey, keyPower, 2}, // autorepeat
		{0x04, keyPower, 1},  // EV_MSC with the same code
		{evKey, keyPower, 1}, // second press
	} {
		stream.Write(inputEvent(uint16(ev[0]), uint16(ev[1]), int32(ev[2])))
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	presses := make(chan string, 10)
	done := make(chan struct{})
	go func() { watchKeyPower(pr, "btn", presses); close(done) }()
	data := stream.Bytes()
	for len(data) > 0 {
		n := min(len(data), 17)
		pw.Write(data[:n])
		data = data[n:]
		time.Sleep(time.Millisecond)
	}
	pw.Close()
	<-done
	if len(presses) != 2 {
		t.Fatalf("%d presses seen, want 2", len(presses))
	}
}

// TestSuperviseWithStop: a stop request sends SIGTERM; a child that exits on it returns
// at once with stopped set; one that ignores it is killed after the grace period.
func TestSuperviseWithStop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		script   string
		wantSig  syscall.Signal
		wantExit int
		minTime  time.Duration
	}{
		{"exits on SIGTERM", `trap 'exit 7' TERM; while :; do sleep 0.05; done`, 0, 7, 0},
		{"ignores SIGTERM", `trap '' TERM; while :; do sleep 0.05; done`, syscall.SIGKILL, 0, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan StopRequest, 1)
			var console bytes.Buffer
			go func() {
				time.Sleep(300 * time.Millisecond) // let the shell install its trap
				stop <- StopRequest{Reason: "test button"}
			}()
			start := time.Now()
			st, stopped, err := SuperviseWith([]string{"/bin/sh", "-c", tc.script}, os.Environ(),
				SuperviseOptions{Stop: stop, Grace: 500 * time.Millisecond, Console: &console})
			took := time.Since(start) - 300*time.Millisecond
			if err != nil || !stopped {
				t.Fatalf("SuperviseWith = %v, stopped=%v, %v", st, stopped, err)
			}
			if tc.wantSig != 0 {
				if !st.Signaled() || st.Signal() != tc.wantSig {
					t.Fatalf("status %v, want killed by %v", st, tc.wantSig)
				}
				if !strings.Contains(console.String(), "SIGKILL") {
					t.Errorf("console lacks the SIGKILL step: %q", console.String())
				}
			} else if !st.Exited() || st.ExitStatus() != tc.wantExit {
				t.Fatalf("status %v, want exit %d", st, tc.wantExit)
			}
			if took < tc.minTime {
				t.Errorf("returned %v after the stop request, before the %v grace", took, tc.minTime)
			}
			if !strings.Contains(console.String(), "test button; stopping the agent") {
				t.Errorf("console lacks the stop line: %q", console.String())
			}
		})
	}
}

func TestSuperviseWithoutStop(t *testing.T) {
	st, stopped, err := SuperviseWith([]string{"/bin/sh", "-c", "exit 4"}, os.Environ(), SuperviseOptions{})
	if err != nil || stopped || !st.Exited() || st.ExitStatus() != 4 {
		t.Fatalf("SuperviseWith = %v, stopped=%v, %v; want exit 4, not stopped", st, stopped, err)
	}
}
