package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

// BenchmarkBuild measures building an image for the installed kernel with the real
// agent: cold (a fresh store each time: reads, compresses and writes everything) and
// cached (an unchanged spec: a cache hit). It reports the initramfs size.
//
//	go test -run '^$' -bench Build ./images
func BenchmarkBuild(b *testing.B) {
	testutil.RequireKernel(b)
	spec := Spec{Agent: agentBinary(b)}
	ctx := context.Background()
	b.Run("cold", func(b *testing.B) {
		var size int64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s, err := Open(filepath.Join(b.TempDir(), fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			img, err := s.Build(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			size = img.Manifest.Initramfs.Size
		}
		b.ReportMetric(float64(size), "initramfs_bytes")
	})
	b.Run("cached", func(b *testing.B) {
		s, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Build(ctx, spec); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			img, err := s.Build(ctx, spec)
			if err != nil || !img.Cached {
				b.Fatalf("cached=%v err=%v", img.Cached, err)
			}
		}
	})
}

// BenchmarkBoot boots, in the same run and the same way (libvirt, TCG, 1 vCPU, 256 MiB,
// console=ttyS0 quiet), the built image until the agent's ready line arrives on the
// virtio-serial socket, and a plain busybox initramfs (internal/testguest) until its
// script's first line arrives. ms/boot is from domain creation to that line; boot_ms is
// the guest's own uptime at the agent's ready line.
//
//	PADDOCK_REQUIRE_VM=1 go test -run '^$' -bench Boot -benchtime 3x ./images
func BenchmarkBoot(b *testing.B) {
	hv := connectHV(b)
	dir := qemuDir(b)
	store, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	img := hostImage(b, store, "")
	bb := testguest.Build(b, testguest.Options{Script: `echo "BUSYBOX READY" > "$PORT"; sleep 3600`})
	for _, tc := range []struct{ name, kernel, initrd string }{
		{"agent", img.Kernel(), img.Initrd()},
		{"busybox", bb.Kernel, bb.Initrd},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var total time.Duration
			var guestMs float64
			for i := 0; i < b.N; i++ {
				start := time.Now()
				spec := bootGuest(b, hv, dir, tc.kernel, tc.initrd, nil)
				conn, r := dialGuest(b, spec.Channels[0].SocketPath, time.Now().Add(bootTimeout))
				line := readGuestLine(b, r, spec)
				total += time.Since(start)
				if m := readyRE.FindStringSubmatch(line); m != nil {
					var ms float64
					fmt.Sscan(m[2], &ms)
					guestMs += ms
				} else if line != "BUSYBOX READY" {
					b.Fatalf("first line %q", line)
				}
				conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := hv.Destroy(ctx, spec.Name); err != nil {
					b.Fatal(err)
				}
				cancel()
				os.Remove(spec.ConsoleLog)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/boot")
			if guestMs > 0 {
				b.ReportMetric(guestMs/float64(b.N), "guest_boot_ms")
			}
			if tc.name == "agent" {
				b.ReportMetric(float64(img.Manifest.Initramfs.Size), "initramfs_bytes")
			} else if fi, err := os.Stat(tc.initrd); err == nil {
				b.ReportMetric(float64(fi.Size()), "initramfs_bytes")
			}
		})
	}
}
