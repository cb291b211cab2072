package main

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The regexps findLevel and replaceDigits stand in for.
var (
	levelRE = regexp.MustCompile(`(?i)\b(trace|debug|info|warning|warn|error|err|fatal|critical|panic)\b`)
	digitRE = regexp.MustCompile(`\d+`)
)

// TestFindLevelMatchesRegexp checks findLevel and replaceDigits against the
// regexps on fixed and random lines made of level words, near-misses, digits,
// punctuation and non-ASCII text.
func TestFindLevelMatchesRegexp(t *testing.T) {
	lines := []string{
		"", "INFO", "x INFO", "INFOx WARN", "_error ERR", "err9 panic", "ERRORS fatal:", "é error é", "errore",
		"2024-01-01 WARNING retrying", "WarN", "[critical]", "info_ debug", "1info 2 trace", "Ｅrror info",
	}
	pieces := []string{"info", "INFO", "Warn", "warning", "err", "error", "errors", "fatal", "Critical", "panic", "trace",
		"debug", "x", "_", "9", "12", " ", "  ", ":", "-", "[", "]", "é", "ſ", "\t", "=", "user42", "id=7"}
	rng := rand.New(rand.NewPCG(1, 1))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		lines = append(lines, b.String())
	}
	for _, line := range lines {
		wantLevel, wantEnd := "unknown", -1
		if loc := levelRE.FindStringSubmatchIndex(line); loc != nil {
			wantLevel, wantEnd = levels[strings.ToLower(line[loc[2]:loc[3]])], loc[3]
		}
		if lv, end := findLevel(line); lv != wantLevel || end != wantEnd {
			t.Fatalf("findLevel(%q) = %s, %d; the regexp says %s, %d", line, lv, end, wantLevel, wantEnd)
		}
		if got, want := replaceDigits(line), digitRE.ReplaceAllString(line, "N"); got != want {
			t.Fatalf("replaceDigits(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestLineReader(t *testing.T) {
	in := "short\r\nexactly10!\n" + strings.Repeat("y", 25) + "\nlast without newline"
	lr := newLineReader(strings.NewReader(in), 10)
	var got []string
	var longs []bool
	for {
		b, long, err := lr.next()
		if err != nil {
			break
		}
		got = append(got, string(b))
		longs = append(longs, long)
	}
	want := []string{"short", "exactly10!", strings.Repeat("y", 10), "last witho"}
	wantLong := []bool{false, false, true, true}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q, want %q", got, want)
	}
	for i := range wantLong {
		if longs[i] != wantLong[i] {
			t.Errorf("line %d long=%v, want %v", i, longs[i], wantLong[i])
		}
	}
}
