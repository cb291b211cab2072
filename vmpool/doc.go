// Package vmpool owns the pools of guests on one host: the reconcile loop that keeps
// warm guests booted, autoscaling from the server backlog and the host headroom, replacing
// crashed guests, recycling guests after N tasks, and the relay between each guest's
// virtio-serial port and the server. Not built yet: see the host daemon issue.
package vmpool
