//go:build linux

package pid1

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reseed mixes seed into the kernel's input pool, credited as len(seed)*8 bits
// (RNDADDENTROPY on /dev/urandom), and makes the kernel reseed its CRNG from that pool
// now (RNDRESEEDCRNG) rather than at its next scheduled reseed. It needs
// CAP_SYS_ADMIN (the agent runs as root in its micro-VM).
//
// A guest restored from a memory snapshot starts with its template's CRNG state: without
// this (or the generation-id reseed of the kernel's vmgenid driver) every clone would
// draw the same "random" bytes.
func Reseed(seed []byte) error {
	if len(seed) == 0 {
		return fmt.Errorf("reseeding the kernel RNG: empty seed")
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseeding the kernel RNG: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+(len(seed)+3)/4*4)
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))
	copy(buf[8:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return fmt.Errorf("reseeding the kernel RNG: RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseeding the kernel RNG: RNDRESEEDCRNG: %w", e)
	}
	return nil
}
