// Command logscan is a Paddock handler that summarises log files.
//
// Task type "logscan". Every input, inline or a file of any size, is read as a
// stream of text, one log record per line, in bounded memory. Payload (JSON,
// optional):
//
//	{"patterns": ["timeout", "user=\\d+"], "top": 10, "max_matches": 100,
//	 "max_line_bytes": 1048576}
//
// A line longer than max_line_bytes (default 1 MiB) is judged by its first
// max_line_bytes bytes, the rest skipped, and counted in long_lines. At most
// 10000 distinct error messages (each cut to 512 bytes) are grouped; errors with
// a new message past that are counted in errors_not_grouped. A matching line's
// text is cut to 4096 bytes.
//
// Output (JSON): lines; counts by level (trace, debug, info, warn, error, fatal,
// unknown — the first level word in a line, case-insensitive: WARNING counts as
// warn, ERR as error, CRITICAL and PANIC as fatal); the top error messages (error
// and fatal lines, with digits replaced by N so repeats group, by count then
// text); and for each pattern (a Go regexp) its match count and the first
// max_matches matching lines with their input name and line number.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type payload struct {
	Patterns     []string `json:"patterns"`
	Top          int      `json:"top"`
	MaxMatches   int      `json:"max_matches"`
	MaxLineBytes int      `json:"max_line_bytes"`
}

// Limits that keep memory bounded whatever the input.
const (
	defaultMaxLine  = 1 << 20
	maxDistinctErrs = 10000
	maxMessageBytes = 512
	maxMatchText    = 4096
)

// Report is logscan's output.
type Report struct {
	Lines            int              `json:"lines"`
	Levels           map[string]int   `json:"levels"`
	TopErrors        []MessageCount   `json:"top_errors"`
	Patterns         []PatternMatches `json:"patterns"`
	LongLines        int              `json:"long_lines,omitempty"`
	ErrorsNotGrouped int              `json:"errors_not_grouped,omitempty"`
}

// MessageCount is one normalised error message and how often it occurred.
type MessageCount struct {
	Message string `json:"message"`
	Count   int    `json:"count"`
}

// PatternMatches are the lines one pattern matched.
type PatternMatches struct {
	Pattern string  `json:"pattern"`
	Count   int     `json:"count"`
	Matches []Match `json:"matches"`
}

// Match is one matching line.
type Match struct {
	Input string `json:"input"`
	Line  int    `json:"line"`
	Text  string `json:"text"`
}

var (
	levels = map[string]string{
		"trace": "trace", "debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
		"error": "error", "err": "error", "fatal": "fatal", "critical": "fatal", "panic": "fatal",
	}
)

// findLevel returns the level of the first word of line (a run of ASCII letters,
// digits and '_', as regexp's \b sees words) that is a level word in any case,
// and the index just past that word; "unknown", -1 when there is none. It does
// what the regexp (?i)\b(trace|debug|info|warning|warn|error|err|fatal|critical|panic)\b
// does, several times faster.
func findLevel(line string) (string, int) {
	var buf [8]byte
	for i := 0; i < len(line); {
		if !isWord(line[i]) {
			i++
			continue
		}
		j := i
		for j < len(line) && isWord(line[j]) {
			j++
		}
		if n := j - i; n >= 3 && n <= len(buf) {
			for k := 0; k < n; k++ {
				c := line[i+k]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				buf[k] = c
			}
			if lv, ok := levels[string(buf[:n])]; ok {
				return lv, j
			}
		}
		i = j
	}
	return "unknown", -1
}

// replaceDigits replaces every run of ASCII digits in s with "N" (as the
// regexp \d+ would), so messages that differ only in numbers group together.
func replaceDigits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			if b.Cap() == 0 {
				b.Grow(len(s))
				b.WriteString(s[:i])
			}
			b.WriteByte('N')
			for i+1 < len(s) && isDigit(s[i+1]) {
				i++
			}
			continue
		}
		if b.Cap() > 0 {
			b.WriteByte(s[i])
		}
	}
	if b.Cap() == 0 {
		return s
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isWord(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// Source is one named log to scan.
type Source struct {
	Name string
	R    io.Reader
}

// Scan builds the report for the sources, in the order given.
func Scan(ctx context.Context, sources []Source, p payload) (Report, error) {
	if p.Top == 0 {
		p.Top = 10
	}
	if p.MaxMatches == 0 {
		p.MaxMatches = 100
	}
	if p.MaxLineBytes == 0 {
		p.MaxLineBytes = defaultMaxLine
	}
	res := make([]*regexp.Regexp, len(p.Patterns))
	rep := Report{Levels: map[string]int{}, TopErrors: []MessageCount{}, Patterns: []PatternMatches{}}
	for i, s := range p.Patterns {
		re, err := regexp.Compile(s)
		if err != nil {
			return Report{}, sdk.Fatalf("logscan: payload patterns[%d] %q is not a valid Go regexp: %v", i, s, err)
		}
		res[i] = re
		rep.Patterns = append(rep.Patterns, PatternMatches{Pattern: s, Matches: []Match{}})
	}
	errs := map[string]int{}
	for _, src := range sources {
		lr := newLineReader(src.R, p.MaxLineBytes)
		for ln := 1; ; ln++ {
			b, long, err := lr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return Report{}, sdk.Retryable(fmt.Errorf("logscan: reading input %q at line %d: %w", src.Name, ln, err))
			}
			if ln%4096 == 0 && ctx.Err() != nil {
				return Report{}, ctx.Err()
			}
			if long {
				rep.LongLines++
			}
			line := string(b)
			rep.Lines++
			level, end := findLevel(line)
			if level == "error" || level == "fatal" {
				msg := strings.TrimLeft(line[end:], " \t:]=|-\"")
				msg = replaceDigits(strings.TrimSpace(truncate(msg, maxMessageBytes)))
				if _, ok := errs[msg]; ok || len(errs) < maxDistinctErrs {
					errs[msg]++
				} else {
					rep.ErrorsNotGrouped++
				}
			}
			rep.Levels[level]++
			for i, re := range res {
				if re.MatchString(line) {
					pm := &rep.Patterns[i]
					pm.Count++
					if len(pm.Matches) < p.MaxMatches {
						pm.Matches = append(pm.Matches, Match{Input: src.Name, Line: ln, Text: truncate(line, maxMatchText)})
					}
				}
			}
		}
	}
	for m, c := range errs {
		rep.TopErrors = append(rep.TopErrors, MessageCount{Message: m, Count: c})
	}
	sort.Slice(rep.TopErrors, func(i, j int) bool {
		a, b := rep.TopErrors[i], rep.TopErrors[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Message < b.Message
	})
	if len(rep.TopErrors) > p.Top {
		rep.TopErrors = rep.TopErrors[:p.Top]
	}
	return rep, nil
}

// truncate cuts s to at most n bytes, on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// lineReader yields lines without their "\n" or "\r\n" (as bufio.ScanLines), in
// memory bounded by max: a longer line yields its first max bytes, and the rest
// of it is skipped.
type lineReader struct {
	br   *bufio.Reader
	max  int
	long []byte // the kept start of a long line (the reader's buffer is reused while skipping)
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, max+2), max: max} // + "\r\n"
}

// next returns the next line (valid until the following call) and whether it was
// cut; io.EOF after the last line.
func (l *lineReader) next() (line []byte, long bool, err error) {
	b, err := l.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		l.long = append(l.long[:0], b...)
		b, long = l.long, true
		for err == bufio.ErrBufferFull { // skip the rest of the line
			_, err = l.br.ReadSlice('\n')
		}
		if err == io.EOF {
			err = nil
		}
	case err == io.EOF && len(b) > 0: // a last line without "\n"
		err = nil
	}
	if err != nil {
		return nil, false, err
	}
	if !long {
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
	}
	if len(b) > l.max {
		b, long = b[:l.max], true
	}
	return b, long, nil
}

type logscan struct{}

var _ sdk.Handler = logscan{}

func (logscan) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "logscan", Version: "1.0.0", Concurrency: 2, Description: "log counts by level, top errors, pattern matches"}}
}

func (logscan) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	var p payload
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("logscan: payload is not JSON like {\"patterns\":[\"timeout\"],\"top\":10}: %v", err)
		}
	}
	if p.Top < 0 || p.MaxMatches < 0 {
		return sdk.Response{}, sdk.Fatalf("logscan: payload top and max_matches must not be negative")
	}
	if p.MaxLineBytes < 0 || p.MaxLineBytes > 64<<20 {
		return sdk.Response{}, sdk.Fatalf("logscan: payload max_line_bytes %d: use 1..%d (0: the default, 1 MiB)", p.MaxLineBytes, 64<<20)
	}
	names := req.InputNames()
	if len(names) == 0 {
		return sdk.Response{}, sdk.Fatalf("logscan: no input blobs: attach at least one log file")
	}
	var sources []Source
	for _, name := range names {
		in, err := req.Input(name)
		if err != nil {
			return sdk.Response{}, sdk.Retryable(err)
		}
		defer in.Close()
		sources = append(sources, Source{Name: name, R: in})
	}
	rep, err := Scan(ctx, sources, p)
	if err != nil {
		return sdk.Response{}, err
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	return sdk.Response{Output: b}, nil
}

func main() { sdk.Serve(logscan{}) }
