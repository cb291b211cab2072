package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/paddockvm/paddock/blob"
)

// progressMin is the smallest transfer that gets a progress bar: smaller ones end
// before a bar would be seen.
const progressMin = 8 << 20

// transfer reports the progress of one upload or download on stderr: a bar when
// stderr is a terminal and the transfer is large, else one plain line when it ends
// (nothing when quiet).
type transfer struct {
	w     io.Writer
	verb  string // "uploaded", "downloaded"
	what  string
	quiet bool
	start time.Time
	bar   *progressbar.ProgressBar
	done  int64
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newTransfer starts reporting a transfer of total bytes (-1: unknown) of what.
func newTransfer(app *App, verb, what string, total int64, quiet bool) *transfer {
	t := &transfer{w: app.Err, verb: verb, what: what, quiet: quiet, start: time.Now()}
	if !quiet && isTerminal(app.Err) && (total < 0 || total >= progressMin) {
		t.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(app.Err),
			progressbar.OptionSetDescription(barLabel(what)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(true),
		)
	}
	return t
}

// barLabel shortens what for the bar: a file's base name, a digest's first 12 digits.
func barLabel(what string) string {
	if strings.HasPrefix(what, blob.DigestPrefix) && len(what) > len(blob.DigestPrefix)+12 {
		return what[:len(blob.DigestPrefix)+12] + "…"
	}
	return filepath.Base(what)
}

// Set records that done bytes in all have been moved.
func (t *transfer) Set(done int64) {
	t.done = done
	if t.bar != nil {
		_ = t.bar.Set64(done)
	}
}

// progress is a blobhttp.Progress.
func (t *transfer) progress(done, _ int64) { t.Set(done) }

// Abandon ends the bar without a summary (nothing was moved).
func (t *transfer) Abandon() {
	if t.bar != nil {
		_ = t.bar.Exit()
	}
}

// Finish ends the bar and prints the plain summary line (unless quiet).
func (t *transfer) Finish(moved int64) {
	if t.bar != nil {
		_ = t.bar.Finish()
	}
	if t.quiet {
		return
	}
	el := time.Since(t.start)
	fmt.Fprintf(t.w, "%s %s %s in %s (%s/s)\n", t.verb, t.what, humanize.IBytes(uint64(max(moved, 0))), el.Round(time.Millisecond), rate(moved, el))
}

// rate formats bytes per second.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanize.IBytes(uint64(float64(max(n, 0)) / d.Seconds()))
}
