package cli

import (
	"context"
	"log/slog"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Readiness for systemd units of Type=notify (deploy/systemd): paddock server and
// paddock host send READY=1 once they serve, and STOPPING=1 when they begin to stop.
// Without NOTIFY_SOCKET (not started by systemd) nothing is sent.
//
//   - paddock server is ready once its store is open and its listeners (client,
//     agent, cluster ports) are bound: a connection made from then on is served.
//   - paddock host is ready once libvirt is connected, the metrics port (if any) is
//     bound and its first attempt to reach the server has ended, registered or
//     failed (hostd.Config.Ready). A server that is down does not hold the host back:
//     its guests and pools run without the server, and the link keeps retrying;
//     otherwise systemd would time the start out and restart the daemon, destroying
//     its guests.

// sdNotify sends state to systemd's notify socket, logging a failure (never fatal: the
// daemon serves either way).
func sdNotify(log *slog.Logger, state string) {
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		log.Warn("telling systemd the daemon's state (NOTIFY_SOCKET)", "state", state, "err", err)
	case sent:
		log.Debug("told systemd", "state", state)
	}
}

// sdReady sends READY=1, and STOPPING=1 once ctx is done.
func sdReady(ctx context.Context, log *slog.Logger) {
	sdNotify(log, daemon.SdNotifyReady)
	context.AfterFunc(ctx, func() { sdNotify(log, daemon.SdNotifyStopping) })
}
