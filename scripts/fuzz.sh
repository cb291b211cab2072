#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target for a short fixed time (FUZZTIME, default 10s each),
# one after the other, and exits non-zero if any fails. `go test -fuzz` takes one target
# per run, so the targets are listed here one by one: add a new one to TARGETS.
#
# Each target's committed corpus (testdata/fuzz/<Name>/ in its package, plus its f.Add
# seeds) also runs as plain tests in `go test ./...`. A failure here leaves the input in
# testdata/fuzz/<Name>/ of its package: rerun it with
#   go test -run '^<Name>$/<file>' ./<pkg>
# fix the cause, and commit the input as a regression seed.
#
#   FUZZTIME=10m scripts/fuzz.sh          # the long run (each target 10 minutes, ~2 hours)
#   scripts/fuzz.sh FuzzScore FuzzLoad    # only these targets
set -uo pipefail

cd "$(dirname "$0")/.."
GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-10s}"
# A target's whole run (building, the corpus, fuzzing): go test's default of 10m would
# cut a 10-minute run short. A hung input fails the run at this timeout.
TIMEOUT="${TIMEOUT:-30m}"
# How long the fuzzer minimizes each new input (go's default, 60s, would take a short
# run's whole time on a slow target such as FuzzAgentSession).
MINTIME="${MINTIME:-5s}"

# package:target
TARGETS=(
	agent/transport:FuzzFrameReader
	agent/transport:FuzzHostStream
	sched:FuzzValidateSpec
	sched:FuzzAgentSession
	internal/config:FuzzLoad
	agent:FuzzLoadManifest
	images:FuzzStoreManifest
	plugins/handlers/score:FuzzScore
	plugins/handlers/logscan:FuzzScan
	plugins/handlers/logscan:FuzzLineReader
)

want=("$@")
failed=()
flaked=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT
ran=0
for t in "${TARGETS[@]}"; do
	pkg="${t%%:*}" name="${t##*:}"
	if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$name"; then
		continue
	fi
	ran=$((ran + 1))
	printf 'fuzz: %s (./%s) for %s\n' "$name" "$pkg" "$FUZZTIME"
	# -parallel 1: the machine is shared; one fuzz worker per target.
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -timeout "$TIMEOUT" -fuzzminimizetime "$MINTIME" -parallel 1 "./$pkg" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		# Go 1.26's fuzz coordinator can end a clean run at the -fuzztime boundary with a
		# bare "context deadline exceeded" and no failing input (golang/go#75804, fixed in
		# Go 1.27): not a finding. Anything else, or a failing input written, fails.
		if grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written' "$out" &&
			[ "$(grep -c -- '^--- FAIL' "$out")" -eq 1 ] && ! grep -qE '^\s+--- FAIL|panic:|_test\.go:[0-9]+:' "$out"; then
			printf 'fuzz: %s: the fuzztime deadline race of golang/go#75804 (no failing input): not counted\n' "$name" >&2
			flaked+=("$name")
		else
			failed+=("$name (./$pkg)")
		fi
	fi
done

if [ "$ran" -eq 0 ]; then
	printf 'fuzz: no target matches %s; the targets are:\n' "${want[*]}" >&2
	printf '  %s\n' "${TARGETS[@]##*:}" >&2
	exit 2
fi
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
printf 'fuzz: %d targets passed (%s each)%s\n' "$ran" "$FUZZTIME" "${flaked:+; ended by golang/go#75804: ${flaked[*]}}"
