#!/usr/bin/env bash
# demo.sh runs the demo behind `make demo` (which runs `make setup build` first):
#
#   1. starts `paddock server --dev` on a fresh data directory under /tmp, on free ports;
#   2. starts one `paddock-agent` over TCP with the example handlers from bin/handlers;
#   3. runs the scenario driver (internal/demo/cmd/paddock-demo) against the server:
#      a checksum, a log scan, three scored submissions into a leaderboard, and a task
#      that fails, is retried and succeeds — each result printed as it arrives and checked
#      against the hand-checked figures in internal/demo/expected.go;
#   4. stops the agent and the server (also on Ctrl-C or an error) and removes the data
#      directory (kept, with the logs, when something failed or PADDOCK_DEMO_KEEP=1).
#
# The agent here is a plain process on this machine. Once `paddock dev` (server, host
# daemon and a warm pool of micro-VM guests in one process) exists, it replaces this
# agent and the same scenario runs inside sealed guests.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${BIN:-bin}"

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

for f in "$BIN/paddock" "$BIN/paddock-agent" "$BIN"/handlers/{checksum,logscan,score,testhandler}; do
	[ -x "$f" ] || die "$f is missing: run 'make build' (or 'make demo', which builds first)"
done
command -v go >/dev/null || die "go is not on PATH: install Go 1.26 from https://go.dev/dl/"

WORK="$(mktemp -d /tmp/paddock-demo.XXXXXX)"
server_pid="" agent_pid="" ok=0

stop() { # name pid: SIGTERM, wait up to 10 s, then SIGKILL
	local name="$1" pid="$2"
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	say "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	say "$name did not stop within 10s: killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	stop paddock-agent "$agent_pid"
	stop "paddock server" "$server_pid"
	if [ "$ok" = 1 ] && [ "${PADDOCK_DEMO_KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
		say "stopped cleanly; removed $WORK"
	else
		say "logs and data kept in $WORK (server.log, agent.log, data/paddock.db)"
	fi
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

say "NOTE: this version runs the agent as a plain process over TCP, not in a guest."
say "      'paddock dev' (server + host daemon + micro-VM guests) replaces it once it exists."

say "building the scenario driver"
go build -o "$WORK/paddock-demo" ./internal/demo/cmd/paddock-demo

say "starting paddock server --dev (SQLite in $WORK/data)"
"$BIN/paddock" server --dev --data-dir "$WORK/data" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
	--cluster-listen 127.0.0.1:0 --log-format json >"$WORK/server.log" 2>&1 &
server_pid=$!

api="" agents=""
for _ in $(seq 1 300); do
	line="$(grep -m1 '"msg":"server started"' "$WORK/server.log" 2>/dev/null || true)"
	if [ -n "$line" ]; then
		agents="$(sed -n 's/.*"agents":"\([^"]*\)".*/\1/p' <<<"$line")"
		api="$(sed -n 's/.*"clients":"\([^"]*\)".*/\1/p' <<<"$line")"
		break
	fi
	kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/server.log" >&2; die "paddock server exited before it was ready (log above)"; }
	sleep 0.1
done
[ -n "$api" ] && [ -n "$agents" ] || { cat "$WORK/server.log" >&2; die "paddock server did not say 'server started' within 30s"; }
say "server up: client API http://$api (metrics: http://$api/metrics), agent port $agents"

say "starting paddock-agent over TCP with the handlers checksum, logscan, score, testhandler"
H="$(cd "$BIN/handlers" && pwd)" # the agent wants absolute handler paths
"$BIN/paddock-agent" --server "$agents" --id demo-agent-1 \
	--handler checksum="$H/checksum" --handler logscan="$H/logscan" \
	--handler score="$H/score" --handler testhandler="$H/testhandler" \
	>"$WORK/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do
	grep -q 'registered with the server' "$WORK/agent.log" 2>/dev/null && break
	kill -0 "$agent_pid" 2>/dev/null || { cat "$WORK/agent.log" >&2; die "paddock-agent exited before it registered (log above)"; }
	sleep 0.1
done
grep -q 'registered with the server' "$WORK/agent.log" || { cat "$WORK/agent.log" >&2; die "paddock-agent did not register within 30s (log above)"; }
say "agent demo-agent-1 registered"

echo
if "$WORK/paddock-demo" --server "http://$api" --paddock "$BIN/paddock" --examples examples/demo --agent-wait 60s; then
	ok=1
	echo
	say "done. To try it by hand:"
	say "  $BIN/paddock server --dev --data-dir /tmp/paddock-try                         # terminal 1"
	say "  $BIN/paddock-agent --server 127.0.0.1:7071 --handler checksum=$H/checksum    # terminal 2"
	say "  $BIN/paddock task submit --type checksum --input f=README.md --wait          # terminal 3"
else
	rc=$?
	if [ "$rc" = 130 ]; then
		say "interrupted"
	else
		kill -0 "$agent_pid" 2>/dev/null || { say "paddock-agent exited; its log:"; tail -n 30 "$WORK/agent.log" >&2; }
	fi
	exit "$rc"
fi
