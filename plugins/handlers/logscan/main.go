// Command logscan is a Paddock handler that summarises log files.
//
// Task type "logscan". Every input blob is read as text, one log record per
// line. Payload (JSON, optional):
//
//	{"patterns": ["timeout", "user=\\d+"], "top": 10, "max_matches": 100}
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
	"regexp"
	"sort"
	"strings"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type payload struct {
	Patterns   []string `json:"patterns"`
	Top        int      `json:"top"`
	MaxMatches int      `json:"max_matches"`
}

// Report is logscan's output.
type Report struct {
	Lines     int              `json:"lines"`
	Levels    map[string]int   `json:"levels"`
	TopErrors []MessageCount   `json:"top_errors"`
	Patterns  []PatternMatches `json:"patterns"`
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
	levelRE = regexp.MustCompile(`(?i)\b(trace|debug|info|warning|warn|error|err|fatal|critical|panic)\b`)
	digits  = regexp.MustCompile(`\d+`)
	levels  = map[string]string{
		"trace": "trace", "debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
		"error": "error", "err": "error", "fatal": "fatal", "critical": "fatal", "panic": "fatal",
	}
)

// Scan builds the report for inputs (scanned in name order).
func Scan(ctx context.Context, inputs map[string][]byte, p payload) (Report, error) {
	if p.Top == 0 {
		p.Top = 10
	}
	if p.MaxMatches == 0 {
		p.MaxMatches = 100
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
	names := make([]string, 0, len(inputs))
	for n := range inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := map[string]int{}
	for _, name := range names {
		sc := bufio.NewScanner(bytes.NewReader(inputs[name]))
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for ln := 1; sc.Scan(); ln++ {
			if ln%4096 == 0 && ctx.Err() != nil {
				return Report{}, ctx.Err()
			}
			line := sc.Text()
			rep.Lines++
			level := "unknown"
			if loc := levelRE.FindStringSubmatchIndex(line); loc != nil {
				level = levels[strings.ToLower(line[loc[2]:loc[3]])]
				if level == "error" || level == "fatal" {
					msg := strings.TrimLeft(line[loc[3]:], " \t:]=|-\"")
					errs[digits.ReplaceAllString(strings.TrimSpace(msg), "N")]++
				}
			}
			rep.Levels[level]++
			for i, re := range res {
				if re.MatchString(line) {
					pm := &rep.Patterns[i]
					pm.Count++
					if len(pm.Matches) < p.MaxMatches {
						pm.Matches = append(pm.Matches, Match{Input: name, Line: ln, Text: line})
					}
				}
			}
		}
		if err := sc.Err(); err != nil {
			return Report{}, sdk.Fatalf("logscan: input %q: %v", name, err)
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
	if len(req.Inputs) == 0 {
		return sdk.Response{}, sdk.Fatalf("logscan: no input blobs: attach at least one log file")
	}
	rep, err := Scan(ctx, req.Inputs, p)
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
