#!/usr/bin/env bash
# demo.sh runs the demo behind `make demo` (which runs `make setup build` first):
#
#   1. starts `paddock dev` in the background — the server, the host daemon and a warm
#      pool of two micro-VM guests in one process — on free ports with a fresh data
#      directory under /tmp, its output in $WORK/dev.out (progress is echoed here while
#      the image builds and the guests boot) and its full log in $WORK/data/dev.log;
#   2. once both guests' agents have registered, runs the scenario driver
#      (internal/demo/cmd/paddock-demo) against it through the paddock CLI: a checksum,
#      a log scan, three scored submissions into a leaderboard, and a task that fails
#      once and succeeds on its retry — each result printed as it arrives and checked
#      against the hand-checked figures in internal/demo/expected.go;
#   3. stops `paddock dev` with SIGINT (also on Ctrl-C or an error), waits until it
#      has destroyed its guests, and removes the data directory (kept, with the logs,
#      when something failed or PADDOCK_DEMO_KEEP=1).
#
# Every task runs inside a guest with no network interface: its agent reaches the
# server only through its virtio-serial port, relayed by the host daemon.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${BIN:-bin}"

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

for f in "$BIN/paddock" "$BIN/paddock-agent" "$BIN"/handlers/{checksum,logscan,score,compress,testhandler}; do
	[ -x "$f" ] || die "$f is missing: run 'make build' (or 'make demo', which builds first)"
done
command -v go >/dev/null || die "go is not on PATH: install Go 1.26 from https://go.dev/dl/"
[ "$(id -u)" = 0 ] || die "paddock dev drives qemu:///system: run the demo as root (sudo make demo)"

# The data directory must be reachable by QEMU (user libvirt-qemu): /tmp/paddock-demo.*
# is made 0755.
WORK="$(mktemp -d /tmp/paddock-demo.XXXXXX)"
chmod 0755 "$WORK"
dev_pid="" tail_pid="" ok=0 t0=$SECONDS

stop_dev() {
	[ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null || return 0
	say "stopping paddock dev (pid $dev_pid): it destroys its guests"
	kill -INT "$dev_pid" 2>/dev/null || true
	for _ in $(seq 1 1200); do
		kill -0 "$dev_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$dev_pid" 2>/dev/null; then
		say "paddock dev did not stop within 2 minutes: killing it (the next paddock dev on $WORK/data cleans up)"
		kill -KILL "$dev_pid" 2>/dev/null || true
	fi
	wait "$dev_pid" 2>/dev/null || true
	sed -n 's/^paddock dev: \(stopped.*\|guests still.*\)/demo: paddock dev \1/p' "$WORK/dev.out"
}

cleanup() {
	[ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null || true
	stop_dev
	left="$(virsh -c qemu:///system list --all --name 2>/dev/null | grep -c "^paddock-dev-" || true)"
	[ "$left" = 0 ] || say "note: $left paddock-dev-* guest(s) still defined (another paddock dev running?)"
	if [ "$ok" = 1 ] && [ "${PADDOCK_DEMO_KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
		say "stopped cleanly; removed $WORK (the demo took $((SECONDS - t0)) s)"
	else
		say "logs and data kept in $WORK (dev.out, data/dev.log, data/paddock.db)"
	fi
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

say "building the scenario driver"
go build -o "$WORK/paddock-demo" ./internal/demo/cmd/paddock-demo

say "starting paddock dev (data in $WORK/data; full log in $WORK/data/dev.log)"
# setsid: a Ctrl-C in this terminal reaches the script, which stops paddock dev itself
# (SIGINT, then waits for its guests to be gone) instead of both racing.
setsid "$BIN/paddock" dev --data-dir "$WORK/data" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
	--cluster-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json \
	>"$WORK/dev.out" 2>"$WORK/dev.err" &
dev_pid=$!
# Progress while the image builds and the guests boot: paddock dev's own lines.
tail -n +1 -f "$WORK/dev.out" 2>/dev/null | sed -u 's/^/  | /' &
tail_pid=$!

api=""
for _ in $(seq 1 4800); do # 8 minutes: the first image build and two TCG boots
	if grep -q '^paddock dev: ready in' "$WORK/dev.out" 2>/dev/null; then
		api="$(sed -n 's/^paddock dev: client API *\(http:[^ ]*\).*/\1/p' "$WORK/dev.out" | head -n1)"
		break
	fi
	if ! kill -0 "$dev_pid" 2>/dev/null; then
		sleep 0.3
		kill "$tail_pid" 2>/dev/null || true
		tail_pid=""
		cat "$WORK/dev.err" >&2
		die "paddock dev exited before it was ready (its message above)"
	fi
	sleep 0.1
done
sleep 0.3
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=""
[ -n "$api" ] || { tail -n 20 "$WORK/dev.err" >&2; die "paddock dev was not ready within 8 minutes (log: $WORK/data/dev.log)"; }
export PADDOCK_CLIENT_TOKEN
PADDOCK_CLIENT_TOKEN="$(cat "$WORK/data/token")"
say "paddock dev is up after $((SECONDS - t0)) s: client API $api, metrics $api/metrics"

echo
if "$WORK/paddock-demo" --server "$api" --paddock "$BIN/paddock" --examples examples/demo --agent-wait 3m; then
	ok=1
	echo
	say "done. To try it by hand:"
	say "  sudo $BIN/paddock dev                                   # terminal 1: data in /var/lib/paddock/dev"
	say "  export PADDOCK_CLIENT_TOKEN=\$(sudo cat /var/lib/paddock/dev/token)   # terminal 2"
	say "  $BIN/paddock task submit --type checksum --input f=README.md --wait"
	say "  $BIN/paddock vm ls"
else
	rc=$?
	if [ "$rc" = 130 ]; then
		say "interrupted"
	else
		kill -0 "$dev_pid" 2>/dev/null || { say "paddock dev exited; its last messages:"; tail -n 30 "$WORK/dev.err" >&2; }
	fi
	exit "$rc"
fi
