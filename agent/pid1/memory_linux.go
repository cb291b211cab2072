package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReportingOrder is the smallest block of free guest memory (2^order pages of 4 KiB)
// that the kernel's free page reporting hands back to the host through virtio-balloon
// once the guest has freed it. The kernel's default is the pageblock order (9: 2 MiB),
// so freed memory in smaller pieces stayed resident in the host's QEMU process. Order
// 0 reports every free page: the balloon discards each batch of freed pages on the
// host a few seconds after the guest freed them (a madvise per reported range in QEMU,
// and a fresh zeroed page when the guest allocates it again).
const ReportingOrder = 0

// ReportingOff is a reporting order above the largest (MAX_ORDER 11 in the 6.1 kernel:
// orders 0 to 10): with it the kernel reports nothing. A warm-start template runs with
// it, so that its free pages are not marked reported when the snapshot is saved: a
// restore reads every zero page of the snapshot (QEMU checks that the page is zero
// before writing it), which makes it resident on the host (guest RAM is a private
// memfd: a read of a hole allocates shmem), and only reporting those free pages again
// from the restored guest gives them back; the kernel never reports a page twice
// without it being allocated in between.
const ReportingOff = 11

// ErrNoReporting: the guest cannot hand free pages back to its host (ReportingAvailable
// says what is missing).
var ErrNoReporting = errors.New("no free page reporting")

// reportingOrderFile is the kernel's free page reporting order under a sysfs root.
func reportingOrderFile(sysDir string) string {
	return filepath.Join(sysDir, "module", "page_reporting", "parameters", "page_reporting_order")
}

// balloonReportingBit is VIRTIO_BALLOON_F_REPORTING, the virtio-balloon feature bit of
// free page reporting (include/uapi/linux/virtio_balloon.h).
const balloonReportingBit = 5

// ReportingAvailable returns nil when this guest can report its free pages to the host:
// the kernel has free page reporting (sysDir/module/page_reporting, built in on Debian)
// and a virtio balloon bound to virtio_balloon negotiated VIRTIO_BALLOON_F_REPORTING
// (the domain's balloon has freePageReporting='on'). Otherwise it returns an error
// wrapping ErrNoReporting that says which is missing. The kernel's file exists without
// any balloon, so its presence alone says nothing.
func ReportingAvailable(sysDir string) error {
	if _, err := os.Stat(reportingOrderFile(sysDir)); err != nil {
		return fmt.Errorf("%w: this kernel has no %s", ErrNoReporting, reportingOrderFile(sysDir))
	}
	drv := filepath.Join(sysDir, "bus", "virtio", "drivers", "virtio_balloon")
	devs, _ := filepath.Glob(filepath.Join(drv, "virtio*"))
	if len(devs) == 0 {
		return fmt.Errorf("%w: no virtio balloon device is bound to virtio_balloon (give the domain a virtio memballoon and load the module)", ErrNoReporting)
	}
	for _, d := range devs {
		f, err := os.ReadFile(filepath.Join(d, "features"))
		if err == nil && len(f) > balloonReportingBit && f[balloonReportingBit] == '1' {
			return nil
		}
	}
	return fmt.Errorf("%w: the virtio balloon did not offer free page reporting (set freePageReporting='on' on the domain's memballoon; QEMU >= 5.1)", ErrNoReporting)
}

// SetReportingOrder sets the free page reporting order under sysDir (normally /sys)
// to order and returns the order it replaced. It must run after virtio_balloon has
// registered: Debian's 6.1 kernel overwrites the boot parameter
// page_reporting.page_reporting_order when the balloon registers, so only a write
// afterwards holds. Where free page reporting is not available (ReportingAvailable)
// it changes nothing and returns that error, which wraps ErrNoReporting.
func SetReportingOrder(sysDir string, order int) (was int, err error) {
	if err := ReportingAvailable(sysDir); err != nil {
		return 0, err
	}
	p := reportingOrderFile(sysDir)
	b, err := os.ReadFile(p)
	if err == nil {
		was, err = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if err != nil {
		return 0, fmt.Errorf("reading the free page reporting order: %w", err)
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(order)), 0); err != nil {
		return was, fmt.Errorf("setting the free page reporting order: %w", err)
	}
	return was, nil
}

// QuiesceMemory prepares a warm-start template's memory for its snapshot: it drops the
// page cache and reclaimable slab (procDir/sys/vm/drop_caches; an initramfs's files
// are not page cache and stay), compacts memory, and then zeroes every free page by
// taking nearly all of it into this process (anonymous memory, which the kernel zeroes
// on fault) and giving it back: free memory that held data (the unpacked initramfs
// archive, freed buffers) then saves as zero pages, which take a few bytes each in the
// snapshot, and the pages are free and not marked reported, so a restored guest that
// turns reporting back on (SetReportingOrder ReportingOrder) hands them all back to
// its host. keepKiB is left free (the kernel's reserves, the agent's next steps). It
// returns the guest's MemFree before and after, in KiB, and how much it zeroed.
func QuiesceMemory(procDir string, keepKiB int) (before, after, zeroedKiB int, err error) {
	before, _ = memFreeKiB(procDir)
	var errs []error
	for _, w := range []struct{ file, value string }{
		{"sys/vm/drop_caches", "3"},
		{"sys/vm/compact_memory", "1"},
	} {
		if err := os.WriteFile(filepath.Join(procDir, w.file), []byte(w.value), 0); err != nil {
			errs = append(errs, fmt.Errorf("writing %s: %w", w.file, err))
		}
	}
	zeroedKiB, err = zeroFree(procDir, keepKiB)
	if err != nil {
		errs = append(errs, err)
	}
	after, _ = memFreeKiB(procDir)
	return before, after, zeroedKiB, errors.Join(errs...)
}

// zeroChunk is how much zeroFree takes at a time.
const zeroChunk = 4 << 20

// zeroFree maps and populates anonymous memory in zeroChunk pieces while MemFree stays
// above keepKiB + one chunk, then unmaps it all.
func zeroFree(procDir string, keepKiB int) (int, error) {
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			_ = unix.Munmap(m)
		}
	}()
	for len(maps) < 1<<14 { // 64 GiB: a bound, never reached
		free, err := memFreeKiB(procDir)
		if err != nil {
			return 0, err
		}
		if free < keepKiB+zeroChunk>>10 {
			break
		}
		m, err := unix.Mmap(-1, 0, zeroChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return len(maps) * zeroChunk >> 10, fmt.Errorf("zeroing free memory: %w", err)
		}
		maps = append(maps, m)
	}
	return len(maps) * zeroChunk >> 10, nil
}

// memFreeKiB reads MemFree from procDir/meminfo.
func memFreeKiB(procDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(procDir, "meminfo"))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemFree:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no MemFree in meminfo")
}

// NudgeReporting makes the kernel start a free page reporting pass now: it takes
// sizeKiB of anonymous memory and gives it back, and so many pages freed at once pass
// the per-CPU free lists on to the buddy allocator, whose frees are what wakes the
// reporting. An idle guest frees too little for that, and a restored guest that just
// turned reporting back on (SetReportingOrder) would otherwise hand back nothing.
func NudgeReporting(sizeKiB int) error {
	m, err := unix.Mmap(-1, 0, sizeKiB<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("nudging free page reporting: %w", err)
	}
	return unix.Munmap(m)
}
