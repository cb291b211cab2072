// Package kmod resolves the Linux kernel modules a guest needs, with all their
// dependencies, from the kernel's modules.dep, in the order they must be loaded.
//
// It owns nothing but that lookup: images puts the resolved files into the initramfs and
// the agent (agent/pid1) loads them in the order recorded in the image manifest. Tests run
// against the host's installed kernel (/lib/modules/<version>) and need no daemon.
package kmod
