package demo

import (
	"fmt"
	"regexp"
	"strings"
)

// The hand-checked figures of the scenario on the inputs in examples/demo/. Every
// figure below was worked out by hand (the arithmetic is in the comments) before the
// handlers computed it; TestScenario runs the real handlers and Check compares what
// the demo printed with these lines, character for character.

// Expected are the result lines (the part before "   · ") a run must print, each
// exactly once.
var Expected = []string{
	// truth.csv is "id,label\n" (9 bytes), then 10 rows "img-NN,<label>\n": 4 cats and
	// 3 dogs of 11 bytes, 3 birds of 12 bytes: 9 + 7·11 + 3·12 = 9 + 77 + 36 = 122.
	// The digests are not hand arithmetic; they come from tools independent of Go:
	//   sha256sum examples/demo/truth.csv
	//   gzip -c examples/demo/truth.csv | tail -c8 | od -An -tx4 -N4   (the gzip trailer's CRC-32/IEEE)
	"checksum truth.csv size=122 sha256=8a22125f68b7a6f03b9dd7a566f866bf78da92073068e21e2cfba4802577183c crc32=efa5cb8e",

	// sample.log, 22 lines; the level is the first level word of a line:
	//   info  lines 1 2 4 5 8 11 13 16 22          = 9
	//   debug lines 3 17                            = 2
	//   warn  lines 6 10 (WARNING) 19               = 3
	//   error lines 7 9 12 14 (ERR) 15 18           = 6
	//   fatal line 20                               = 1
	//   unknown line 21 (a stack frame, no level)   = 1     9+2+3+6+1+1 = 22
	"logscan sample.log lines=22 debug=2 info=9 warn=3 error=6 fatal=1 unknown=1",
	// Error and fatal messages with digits as N: lines 7, 9, 15 are the same payments
	// timeout (3×); 12 and 18 the coupon (2×); 14 the disk and 20 the lost database
	// connection once each — ties sorted by text, "disk…" < "lost…", and the payload
	// asks for the top 3.
	"logscan top error 3× upstream timeout after Nms calling payments (attempt N)",
	"logscan top error 2× invalid coupon code for order N",
	"logscan top error 1× disk /var/lib/api usage N%",
	// "timeout": the three payments timeouts (7, 9, 15) and "i/o timeout" on line 20.
	`logscan pattern "timeout" matches 4 lines: 7 9 15 20`,
	// "status=5\d\d": status=502 on line 8 and status=504 on line 16 (the others are 2xx).
	`logscan pattern "status=5\d\d" matches 2 lines: 8 16`,

	// Scores against truth.csv (cat ×4: 01 04 07 10; dog ×3: 02 05 08; bird ×3: 03 06 09).
	// F1 per class = 2PR/(P+R); macro-F1 = the mean over cat, dog, bird.
	//
	// otter — one miss, img-07 cat→dog. Accuracy 9/10 = 0.9000.
	//   cat  tp3 fp0 fn1: P=1, R=3/4, F1 = 2·(3/4)/(7/4) = 6/7
	//   dog  tp3 fp1 fn0: P=3/4, R=1,  F1 = 6/7
	//   bird tp3:                      F1 = 1
	//   macro = (6/7 + 6/7 + 1)/3 = (19/7)/3 = 19/21 = 0.904761… → 0.9048
	"score otter accuracy=0.9000 macro_f1=0.9048 rows=10",
	// badger — three misses in a cycle: img-04 cat→dog, img-05 dog→bird, img-09 bird→cat.
	// Accuracy 7/10 = 0.7000.
	//   cat  tp3 fp1 (09) fn1 (04): P=R=3/4, F1 = 3/4
	//   dog  tp2 fp1 (04) fn1 (05): P=R=2/3, F1 = 2/3
	//   bird tp2 fp1 (05) fn1 (09): P=R=2/3, F1 = 2/3
	//   macro = (3/4 + 2/3 + 2/3)/3 = (9/12 + 16/12)/3 = 25/36 = 0.694444… → 0.6944
	"score badger accuracy=0.7000 macro_f1=0.6944 rows=10",
	// heron — three cats called dogs: img-01, img-07, img-10. Accuracy 7/10 = 0.7000.
	//   cat  tp1 fp0 fn3: P=1, R=1/4,  F1 = 2·(1/4)/(5/4) = 2/5
	//   dog  tp3 fp3 fn0: P=1/2, R=1,  F1 = 2·(1/2)/(3/2) = 2/3
	//   bird tp3:                      F1 = 1
	//   macro = (2/5 + 2/3 + 1)/3 = (6/15 + 10/15 + 15/15)/3 = 31/45 = 0.688888… → 0.6889
	"score heron accuracy=0.7000 macro_f1=0.6889 rows=10",

	// test.flaky with payload "1" and --max-attempts 3: attempt 1 fails (retryable) and
	// is requeued with backoff; attempt 2 succeeds, leaving 1 of 3 attempts unused.
	"test.flaky attempt 1/3 failed, retryable: test.flaky: attempt 1 of the 1 set to fail",
	"test.flaky attempt 2 succeeded (failed attempts before it: 1)",
}

// ExpectedLeaderboard are the leaderboard rows (RANK TEAM MACRO-F1 ACCURACY, fields
// separated by single spaces), in order: by macro-F1 19/21 > 25/36 > 31/45 (badger and
// heron tie on accuracy 0.7; F1 separates them).
var ExpectedLeaderboard = []string{
	"1 otter 0.9048 0.9000",
	"2 badger 0.6944 0.7000",
	"3 heron 0.6889 0.7000",
}

// resultPrefixes start the lines Check treats as results.
var resultPrefixes = []string{"checksum ", "logscan ", "score ", "test.flaky "}

// attemptRE matches an attempt line; for other types than test.flaky such a line is an
// incidental retry (a lost lease, a recycled guest) that the figures do not cover.
var attemptRE = regexp.MustCompile(`^\S+ attempt \d+/\d+ `)

// LeaderboardHeading starts the leaderboard section of the output.
const LeaderboardHeading = "-- leaderboard"

// Check compares a run's printed output with Expected and ExpectedLeaderboard: every
// expected line exactly once, no other result line, the retry's lines in order, and
// the leaderboard rows in order right after its header. The error lists every
// difference.
func Check(out string) error {
	var problems []string
	seen := map[string][]int{}
	lines := strings.Split(out, "\n")
	lbAt := -1
	for i, raw := range lines {
		l := strings.TrimSpace(raw)
		if strings.HasPrefix(l, LeaderboardHeading) {
			lbAt = i
			continue
		}
		if fig, _, ok := strings.Cut(l, "   · "); ok {
			l = strings.TrimSpace(fig)
		}
		if !hasResultPrefix(l) {
			continue
		}
		if attemptRE.MatchString(l) && !strings.HasPrefix(l, "test.flaky ") {
			continue
		}
		seen[l] = append(seen[l], i)
	}
	want := map[string]bool{}
	for _, e := range Expected {
		want[e] = true
		switch n := len(seen[e]); {
		case n == 0:
			problems = append(problems, fmt.Sprintf("missing %q", e))
		case n > 1:
			problems = append(problems, fmt.Sprintf("%q printed %d times", e, n))
		}
	}
	for l, at := range seen {
		if !want[l] {
			problems = append(problems, fmt.Sprintf("unexpected result on line %d: %q", at[0]+1, l))
		}
	}
	// The retry, in order.
	prev := -1
	for _, e := range Expected {
		if !strings.HasPrefix(e, "test.flaky ") || len(seen[e]) == 0 {
			continue
		}
		if seen[e][0] < prev {
			problems = append(problems, fmt.Sprintf("%q printed out of order", e))
		}
		prev = seen[e][0]
	}
	// The leaderboard: heading, header row, then the rows.
	if lbAt < 0 {
		problems = append(problems, "no leaderboard (a line starting "+LeaderboardHeading+")")
	} else {
		rows := lines[lbAt+1:]
		if len(rows) == 0 || !strings.HasPrefix(strings.TrimSpace(rows[0]), "RANK") {
			problems = append(problems, "leaderboard: no RANK header right after the heading")
		} else {
			rows = rows[1:]
			for i, w := range ExpectedLeaderboard {
				got := ""
				if i < len(rows) {
					got = strings.Join(strings.Fields(rows[i]), " ")
				}
				if got != w {
					problems = append(problems, fmt.Sprintf("leaderboard row %d: got %q, want %q", i+1, got, w))
				}
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo output differs from the hand-checked figures:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

func hasResultPrefix(l string) bool {
	for _, p := range resultPrefixes {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}
