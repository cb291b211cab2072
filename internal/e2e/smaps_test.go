package e2e

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// smapsPart is what one kind of mapping of a QEMU process holds.
type smapsPart struct {
	rssKiB, anonHugeKiB float64
	mappings            int
}

// smapsBreakdown attributes a QEMU process's RSS to its kinds of mapping, read from
// /proc/<pid>/smaps: the guest's RAM (the anonymous mapping of memoryMiB), the TCG
// translation cache (the anonymous mapping of tbCacheMiB, executable), the heap
// (brk and the malloc arenas: other anonymous mappings of 64 MiB or less that are not
// thread stacks), the QEMU binary and its shared libraries (file-backed), and the rest.
// It returns one line, biggest first, for the benchmark's log.
func smapsBreakdown(pid, memoryMiB, tbCacheMiB int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	parts := map[string]*smapsPart{}
	var cur *smapsPart
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, _ := strings.Cut(fields[0], "-")
			a, _ := strconv.ParseUint(lo, 16, 64)
			z, _ := strconv.ParseUint(hi, 16, 64)
			sizeMiB := int((z - a) >> 20)
			path := ""
			if len(fields) >= 6 {
				path = fields[5]
			}
			kind := "other-anon"
			switch {
			case path == "[heap]":
				kind = "heap"
			case strings.HasPrefix(path, "[stack") || path == "[vdso]" || path == "[vvar]" || path == "[vsyscall]":
				kind = "stack+vdso"
			case strings.HasPrefix(path, "/memfd:"):
				kind = "guest-ram(memfd)"
			case strings.HasPrefix(path, "/"):
				kind = "files(libs,qemu)"
				if strings.Contains(path, "qemu-system") {
					kind = "qemu-binary"
				}
			case sizeMiB >= memoryMiB && sizeMiB <= memoryMiB+4:
				kind = "guest-ram"
			case sizeMiB == tbCacheMiB && strings.Contains(fields[1], "x"):
				kind = "tb-cache"
			case sizeMiB >= 63 && sizeMiB <= 64:
				kind = "malloc-arenas"
			}
			if parts[kind] == nil {
				parts[kind] = &smapsPart{}
			}
			cur = parts[kind]
			cur.mappings++
			continue
		}
		if cur == nil || len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Rss:":
			cur.rssKiB += v
		case "AnonHugePages:", "ShmemPmdMapped:":
			cur.anonHugeKiB += v
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	kinds := make([]string, 0, len(parts))
	total := 0.0
	for k, p := range parts {
		kinds = append(kinds, k)
		total += p.rssKiB
	}
	sort.Slice(kinds, func(i, j int) bool { return parts[kinds[i]].rssKiB > parts[kinds[j]].rssKiB })
	var b strings.Builder
	fmt.Fprintf(&b, "rss %.1f MiB:", total/1024)
	for _, k := range kinds {
		p := parts[k]
		fmt.Fprintf(&b, " %s %.1f", k, p.rssKiB/1024)
		if p.anonHugeKiB > 0 {
			fmt.Fprintf(&b, " (THP %.0f)", p.anonHugeKiB/1024)
		}
		fmt.Fprintf(&b, " [%d];", p.mappings)
	}
	return b.String(), nil
}
