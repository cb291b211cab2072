// Package guestabi is the contract between the host daemon and the agent inside a
// guest about bulk data: where a task's input blobs appear in the guest, where its
// output files go, and how the host tells the agent that staging is done.
//
// Both sides import it and nothing else of each other. It is a leaf: standard library
// only. The channel itself (a shared directory exported by QEMU into the guest, chosen
// by measurement: docs/dataplane.md) is set up by vmpool on the host and mounted by the
// agent's PID 1 in the guest; both use the tags and mount points below.
package guestabi
