package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const selfCheckSize = 4096

// runSelfCheck writes sc.Pattern (repeated to 4 KiB) at offset 0 of every disk with
// O_DIRECT|O_SYNC, reads it back with O_DIRECT (bypassing the page cache, so the bytes
// come from the virtual disk) and writes one SelfCheckPrefix line per disk to w. A disk
// that is missing or fails is a returned error after its line is written.
func runSelfCheck(w io.Writer, sc SelfCheck) error {
	pattern := sc.Pattern
	if pattern == "" {
		pattern = "paddock-selfcheck"
	}
	want := []byte(strings.Repeat(pattern, selfCheckSize/len(pattern)+1)[:selfCheckSize])
	for _, disk := range sc.Disks {
		size, err := checkDisk(disk, want)
		if err != nil {
			fmt.Fprintf(w, "%s disk=%s ok=false error=%q\n", SelfCheckPrefix, disk, err.Error())
			return fmt.Errorf("self-check of %s: %w", disk, err)
		}
		if _, err := fmt.Fprintf(w, "%s disk=%s ok=true size=%d wrote=%d\n", SelfCheckPrefix, disk, size, len(want)); err != nil {
			return err
		}
	}
	return nil
}

// alignedBuf returns a page-aligned buffer, as O_DIRECT requires.
func alignedBuf(n int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { unix.Munmap(b) }, nil
}

func checkDisk(disk string, want []byte) (size uint64, err error) {
	fd, err := unix.Open(disk, unix.O_RDWR|unix.O_DIRECT|unix.O_SYNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", disk, err)
	}
	f := os.NewFile(uintptr(fd), disk)
	defer f.Close()
	var sz uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64 on %s: %w", disk, e)
	}
	buf, free, err := alignedBuf(len(want))
	if err != nil {
		return 0, err
	}
	defer free()
	copy(buf, want)
	if _, err := f.WriteAt(buf, 0); err != nil {
		return 0, fmt.Errorf("writing %s: %w", disk, err)
	}
	clear(buf)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return 0, fmt.Errorf("reading back %s: %w", disk, err)
	}
	if !bytes.Equal(buf, want) {
		return 0, fmt.Errorf("%s: read back differs from what was written", disk)
	}
	return sz, nil
}
