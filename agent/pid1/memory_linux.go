package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ReportingOrder is the smallest block of free guest memory (2^order pages of 4 KiB)
// that the kernel's free page reporting hands back to the host through virtio-balloon
// once the guest has freed it. The kernel's default is the pageblock order (9: 2 MiB),
// so freed memory in smaller pieces stays resident in the host's QEMU process, and a
// memory snapshot of the guest saves it (non-zero) and writes it back into every guest
// restored from it. Order 0 reports every free page: the balloon discards each batch of
// freed pages on the host a few seconds after the guest freed them (a madvise per
// reported range in QEMU, and a fresh zeroed page when the guest allocates it again).
const ReportingOrder = 0

// SetReportingOrder sets the free page reporting order under sysDir (normally /sys)
// to order. It must run after virtio_balloon has registered: Debian's 6.1 kernel
// overwrites the boot parameter page_reporting.page_reporting_order when the balloon
// registers, so only a write afterwards holds. A kernel without free page reporting
// (no /sys/module/page_reporting) is not an error: it returns false.
func SetReportingOrder(sysDir string, order int) (bool, error) {
	p := filepath.Join(sysDir, "module", "page_reporting", "parameters", "page_reporting_order")
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(order)), 0); err != nil {
		return false, fmt.Errorf("setting the free page reporting order: %w", err)
	}
	return true, nil
}

// SettleDelay is how long QuiesceMemory waits after compacting for the kernel's free
// page reporting to run: it reports 2 s after pages were freed (page_reporting.c's
// PAGE_REPORTING_DELAY), then in batches.
const SettleDelay = 3 * time.Second

// QuiesceMemory makes a guest's free memory zero on the host before a memory snapshot:
// it drops the page cache and reclaimable slab (procDir/sys/vm/drop_caches; an
// initramfs's files are not page cache and stay), compacts memory so the freed pages
// form blocks that free page reporting hands back, and waits settle for the reporting
// to run. What the balloon reported reads as zero pages on the host, which a snapshot
// stores as a flag and a restore does not write, so no guest restored from the
// snapshot holds those pages. It returns the guest's MemFree before and after, in KiB.
func QuiesceMemory(procDir string, settle time.Duration) (before, after int, err error) {
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
	time.Sleep(settle)
	after, _ = memFreeKiB(procDir)
	return before, after, errors.Join(errs...)
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
