package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// refLines splits in as bufio.ScanLines does: on "\n", dropping one "\r" before it
// (and at the end), with a last line without "\n" kept when it is not empty.
func refLines(in string) []string {
	var out []string
	for in != "" {
		i := strings.IndexByte(in, '\n')
		if i < 0 {
			out = append(out, strings.TrimSuffix(in, "\r"))
			break
		}
		out = append(out, strings.TrimSuffix(in[:i], "\r"))
		in = in[i+1:]
	}
	return out
}

// FuzzLineReader checks the bounded line reader against a plain split: the same
// number of lines, each the first max bytes of the reference line, long exactly
// when the reference line is longer than max.
//
//	go test -run '^$' -fuzz '^FuzzLineReader$' -fuzztime 10m ./plugins/handlers/logscan
func FuzzLineReader(f *testing.F) {
	f.Add("short\r\nexactly10!\n"+strings.Repeat("y", 25)+"\nlast without newline", 10)
	f.Add("a\n\n\r\n\rb\r\r\n", 1)
	f.Add(strings.Repeat("x", 40)+"\r\n"+strings.Repeat("z", 17)+"\r", 15)
	f.Add("", 5)
	f.Fuzz(func(t *testing.T, in string, max int) {
		if max <= 0 || max > 1<<16 {
			max = 1 + (max&0xffff+0x10000)%64
		}
		want := refLines(in)
		lr := newLineReader(strings.NewReader(in), max)
		for i := 0; ; i++ {
			b, long, err := lr.next()
			if err != nil {
				if i != len(want) {
					t.Fatalf("max %d: %d lines, want %d (%q), then %v", max, i, len(want), want, err)
				}
				return
			}
			if i >= len(want) {
				t.Fatalf("max %d: line %d %q past the %d lines of %q", max, i+1, b, len(want), in)
			}
			w, wlong := want[i], len(want[i]) > max
			if wlong {
				w = w[:max]
			}
			if string(b) != w || long != wlong {
				t.Fatalf("max %d: line %d = %q long=%v, want %q long=%v (input %q)", max, i+1, b, long, w, wlong, in)
			}
		}
	})
}

// FuzzScan runs Scan on fuzzed logs, with a fuzzed pattern and limits, and checks the
// counts add up: lines as the reference split, levels summing to lines, each line's
// level as the documented regexp, grouped errors plus errors_not_grouped equal to the
// error and fatal lines, the pattern's count and matches as the regexp itself says,
// and the report encoding to JSON that decodes to the same report.
//
//	go test -run '^$' -fuzz '^FuzzScan$' -fuzztime 10m ./plugins/handlers/logscan
func FuzzScan(f *testing.F) {
	f.Add("2024-01-01 INFO start\nERROR timeout after 30s\nerror: timeout after 31s\nWARNING disk 91%\nFATAL: panic\n", "a.log", "timeout", 2, 1, 0)
	f.Add("x\r\nuser=12 ERR failed\n\nCRITICAL é\xff\n", "b", `user=\d+`, 0, 0, 8)
	f.Add(strings.Repeat("error e", 100)+"\n", "c", "(", 1, 1, 16)
	f.Fuzz(func(t *testing.T, log, name, pattern string, top, maxMatches, maxLine int) {
		if len(pattern) > 64 {
			pattern = pattern[:64]
		}
		re, reErr := regexp.Compile(pattern)
		p := payload{Patterns: []string{pattern}, Top: clamp(top, 0, 50), MaxMatches: clamp(maxMatches, 0, 50), MaxLineBytes: clamp(maxLine, 1, 256)}
		// Half the log in each of two inputs: counts go on across inputs, line
		// numbers restart.
		half := strings.LastIndexByte(log[:len(log)/2], '\n') + 1
		srcs := []Source{{Name: name, R: strings.NewReader(log[:half])}, {Name: name + "2", R: strings.NewReader(log[half:])}}
		rep, err := Scan(context.Background(), srcs, p)
		if reErr != nil {
			if err == nil {
				t.Fatalf("pattern %q does not compile (%v), yet Scan accepted it", pattern, reErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		maxLineBytes := p.MaxLineBytes
		if maxLineBytes == 0 {
			maxLineBytes = defaultMaxLine
		}
		var lines []string
		var inputs []int
		for i, part := range []string{log[:half], log[half:]} {
			for _, l := range refLines(part) {
				if len(l) > maxLineBytes {
					l = l[:maxLineBytes]
				}
				lines, inputs = append(lines, l), append(inputs, i)
			}
		}
		if rep.Lines != len(lines) {
			t.Fatalf("lines %d, want %d", rep.Lines, len(lines))
		}
		want, errLines, long, matches := map[string]int{}, 0, 0, 0
		for _, l := range lines {
			lv := "unknown"
			if loc := levelRE.FindStringSubmatchIndex(l); loc != nil {
				lv = levels[strings.ToLower(l[loc[2]:loc[3]])]
			}
			want[lv]++
			if lv == "error" || lv == "fatal" {
				errLines++
			}
			if re.MatchString(l) {
				matches++
			}
		}
		for _, part := range []string{log[:half], log[half:]} {
			for _, l := range refLines(part) {
				if len(l) > maxLineBytes {
					long++
				}
			}
		}
		sum := 0
		for lv, n := range rep.Levels {
			if n != want[lv] {
				t.Errorf("level %s: %d lines, want %d", lv, n, want[lv])
			}
			sum += n
		}
		if sum != rep.Lines || len(rep.Levels) != len(want) {
			t.Errorf("levels %v sum to %d over %d lines; want %v", rep.Levels, sum, rep.Lines, want)
		}
		if rep.LongLines != long {
			t.Errorf("long_lines %d, want %d", rep.LongLines, long)
		}
		topN := p.Top
		if topN == 0 {
			topN = 10
		}
		grouped := 0
		for i, mc := range rep.TopErrors {
			if mc.Count <= 0 || len(mc.Message) > maxMessageBytes || strings.ContainsAny(mc.Message, "0123456789") {
				t.Errorf("top_errors[%d] = %+v: a count must be positive, a message at most %d bytes without digits", i, mc, maxMessageBytes)
			}
			if i > 0 && (rep.TopErrors[i-1].Count < mc.Count || rep.TopErrors[i-1].Count == mc.Count && rep.TopErrors[i-1].Message >= mc.Message) {
				t.Errorf("top_errors not sorted by count then text at %d: %+v", i, rep.TopErrors)
			}
			grouped += mc.Count
		}
		if len(rep.TopErrors) > topN {
			t.Errorf("%d top errors, top is %d", len(rep.TopErrors), topN)
		}
		if len(rep.TopErrors) < topN && grouped+rep.ErrorsNotGrouped != errLines {
			t.Errorf("grouped %d + not grouped %d != %d error and fatal lines", grouped, rep.ErrorsNotGrouped, errLines)
		}
		if len(rep.Patterns) != 1 || rep.Patterns[0].Pattern != pattern || rep.Patterns[0].Count != matches {
			t.Fatalf("patterns %+v, want %q with %d matches", rep.Patterns, pattern, matches)
		}
		mm := p.MaxMatches
		if mm == 0 {
			mm = 100
		}
		pm := rep.Patterns[0]
		if len(pm.Matches) != min(matches, mm) {
			t.Errorf("%d matches listed, want min(%d, %d)", len(pm.Matches), matches, mm)
		}
		prev := -1
		for _, m := range pm.Matches {
			g := globalIndex(lines, inputs, m, name)
			if g < 0 || m.Text != lines[g] || !re.MatchString(lines[g]) {
				t.Errorf("match %+v does not name a matching line", m)
			}
			if g <= prev {
				t.Errorf("matches out of order: %+v", pm.Matches)
			} else {
				prev = g
			}
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatalf("the report does not encode: %v", err)
		}
		var back Report
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("the report's JSON does not decode: %v", err)
		}
	})
}

// globalIndex returns the index in lines of match m (-1 when it names none).
func globalIndex(lines []string, inputs []int, m Match, name string) int {
	in := 0
	if m.Input == name+"2" {
		in = 1
	} else if m.Input != name {
		return -1
	}
	n := 0
	for i := range lines {
		if inputs[i] == in {
			n++
			if n == m.Line {
				return i
			}
		}
	}
	return -1
}

func clamp(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	return lo + v%(hi-lo+1)
}
