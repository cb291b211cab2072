package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/hostd/bwshare"
	"github.com/paddockvm/paddock/internal/config"
)

// TestDataPlaneKeyErrors starts paddock server and paddock host with a bad data-plane
// key each: the command fails before it serves anything, naming the key and the fix.
func TestDataPlaneKeyErrors(t *testing.T) {
	tests := []struct {
		name string
		cmd  string
		env  map[string]string
		want []string
	}{
		{"blob store", "server", map[string]string{"PADDOCK_SERVER_BLOB_STORE": "nfs"}, []string{"server.blob_store", "fs or s3"}},
		{"s3 without bucket", "server", map[string]string{"PADDOCK_SERVER_BLOB_STORE": "s3"}, []string{"server.s3_bucket"}},
		{"s3 half credentials", "server", map[string]string{"PADDOCK_SERVER_BLOB_STORE": "s3", "PADDOCK_SERVER_S3_BUCKET": "b", "PADDOCK_SERVER_S3_ACCESS_KEY": "AK"}, []string{"server.s3_secret_key"}},
		{"max output bytes", "server", map[string]string{"PADDOCK_SERVER_MAX_OUTPUT_BYTES": "lots"}, []string{"server.max_output_bytes", "64MiB or 20GiB"}},
		{"max output bytes 0", "server", map[string]string{"PADDOCK_SERVER_MAX_OUTPUT_BYTES": "0"}, []string{"server.max_output_bytes", "64GiB"}},
		{"max blob bytes", "server", map[string]string{"PADDOCK_SERVER_MAX_BLOB_BYTES": "-5"}, []string{"server.max_blob_bytes", "0 or more"}},
		{"blob reserve", "server", map[string]string{"PADDOCK_SERVER_BLOB_RESERVE": "half"}, []string{"server.blob_reserve", "64MiB"}},
		{"retention", "server", map[string]string{"PADDOCK_SERVER_BLOB_RETENTION": "0s"}, []string{"server.blob_retention", "24h"}},
		{"task retention", "server", map[string]string{"PADDOCK_SERVER_TASK_RETENTION_SUCCEEDED": "banana"}, []string{"server.task_retention.succeeded", "24h"}},
		{"task retention negative", "server", map[string]string{"PADDOCK_SERVER_TASK_RETENTION_DEAD": "-1h"}, []string{"server.task_retention.dead"}},
		{"cache policy", "host", map[string]string{"PADDOCK_HOST_CACHE_POLICY": "fifo"}, []string{"host.cache_policy", "lru"}},
		{"cache read policy", "host", map[string]string{"PADDOCK_HOST_CACHE_READ_POLICY": "maybe"}, []string{"host.cache_read_policy", "no-cache"}},
		{"cache write policy", "host", map[string]string{"PADDOCK_HOST_CACHE_WRITE_POLICY": "later"}, []string{"host.cache_write_policy", "async"}},
		{"cache lambda", "host", map[string]string{"PADDOCK_HOST_CACHE_LRFU_LAMBDA": "2"}, []string{"host.cache_lrfu_lambda"}},
		{"cache memory", "host", map[string]string{"PADDOCK_HOST_CACHE_MEMORY_BYTES": "64 potatoes"}, []string{"host.cache_memory_bytes", "64MiB"}},
		{"cache disk 0", "host", map[string]string{"PADDOCK_HOST_CACHE_DISK_BYTES": "0"}, []string{"host.cache_disk_bytes"}},
		{"bandwidth 0", "host", map[string]string{"PADDOCK_HOST_BANDWIDTH": "0MB/s"}, []string{"host.bandwidth", "90MB/s", "above 0"}},
		{"bandwidth negative", "host", map[string]string{"PADDOCK_HOST_BANDWIDTH": "-90MB/s"}, []string{"host.bandwidth", "-90MB/s", "90MB/s"}},
		{"bandwidth without /s", "host", map[string]string{"PADDOCK_HOST_BANDWIDTH": "90MB"}, []string{"host.bandwidth", "/s"}},
		{"peer fetch without peers", "host", map[string]string{"PADDOCK_HOST_PEER_FETCH": "true"}, []string{"host.peer_fetch", "host.peers"}},
		{"dev blob store", "dev", map[string]string{"PADDOCK_SERVER_BLOB_STORE": "ftp"}, []string{"server.blob_store"}},
		{"dev cache policy", "dev", map[string]string{"PADDOCK_HOST_CACHE_POLICY": "mru"}, []string{"host.cache_policy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := []string{tc.cmd, "--data-dir", dir}
			switch tc.cmd {
			case "server":
				args = append(args, "--dev", "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--cluster-listen", "")
			case "dev": // fails before it builds an image or touches libvirt
				args = append(args, "--libvirt-uri", "test:///default", "--kernel", "/nonexistent")
			default:
				args = append(args, "--libvirt-uri", "test:///default", "--metrics-listen", "")
			}
			_, errOut, code := run(t, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

func TestByteSizeKeys(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"64MiB", 64 << 20, false},
		{"20GiB", 20 << 30, false},
		{"1.5GB", 1500000000, false},
		{"4096", 4096, false},
		{"0", 0, false},
		{"", 0, false},
		{"-1", 0, true},
		{"lots", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			v := viper.New()
			v.Set("host.cache_memory_bytes", tc.in)
			got, err := byteSize(v, "host.cache_memory_bytes")
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("byteSize(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "host.cache_memory_bytes") {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
}

// TestSecretKeyMasked: config show never prints the S3 secret key.
func TestSecretKeyMasked(t *testing.T) {
	t.Setenv("PADDOCK_SERVER_S3_SECRET_KEY", "hunter2-very-secret")
	t.Setenv("PADDOCK_SERVER_S3_ACCESS_KEY", "AKIDEXAMPLE")
	out, errOut, code := run(t, "config", "show", "--json")
	if code != 0 {
		t.Fatal(errOut)
	}
	if strings.Contains(out, "hunter2") {
		t.Fatalf("config show printed the secret key:\n%s", out)
	}
	var got struct {
		Keys []struct {
			Key, Source string
			Value       any
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range got.Keys {
		if k.Key == "server.s3_secret_key" && k.Value != "(set)" {
			t.Errorf("server.s3_secret_key shows %v, want (set)", k.Value)
		}
		if k.Key == "server.s3_access_key" && k.Value != "AKIDEXAMPLE" {
			t.Errorf("server.s3_access_key shows %v, want the id", k.Value)
		}
	}
}

func TestSameFS(t *testing.T) {
	dir := t.TempDir()
	if same, _, _ := sameFS(dir, dir+"/not/yet/made"); !same {
		t.Errorf("a directory and a path below it (not made yet) are on different filesystems?")
	}
	if same, a, b := sameFS("/proc/self", dir); same {
		t.Errorf("/proc (procfs) and %s are on one filesystem? (%s, %s)", dir, a, b)
	}
}

// TestBandwidthClassesKeys reads host.bandwidth_classes from a file: good classes are
// taken, bad ones give an error naming the key, the value and the form.
func TestBandwidthClassesKeys(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    bwshare.Config
		wantErr []string
	}{
		{"none", "host: {}\n", bwshare.Config{}, nil},
		{"classes", "host:\n  bandwidth: 90MB/s\n  bandwidth_classes:\n    online: {min: 30MB/s, weight: 2}\n    batch: {min: 0}\n",
			bwshare.Config{Capacity: 90e6, Classes: map[string]bwshare.Class{"online": {Min: 30e6, Weight: 2}, "batch": {Weight: 1}}}, nil},
		{"bad min", "host:\n  bandwidth_classes:\n    online: {min: 30MB}\n", bwshare.Config{}, []string{"host.bandwidth_classes.online.min", `"30MB"`, "90MB/s"}},
		{"bad weight", "host:\n  bandwidth_classes:\n    online: {weight: 0}\n", bwshare.Config{}, []string{"host.bandwidth_classes.online.weight is 0", "above 0"}},
		{"unknown class key", "host:\n  bandwidth_classes:\n    online: {max: 3MB/s}\n", bwshare.Config{}, []string{"host.bandwidth_classes.online.max", "min and weight"}},
		{"not a map", "host:\n  bandwidth_classes:\n    online: fast\n", bwshare.Config{}, []string{"host.bandwidth_classes.online", "{min: 10MB/s, weight: 1}"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "paddock.yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(file, nil)
			if err != nil {
				t.Fatalf("loading %q: %v", tc.yaml, err)
			}
			got, err := hostBandwidthConfig(c.V)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("accepted %q", tc.yaml)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLinkUse(t *testing.T) {
	for _, tc := range []struct {
		rate, capacity float64
		want           string
	}{{12.5e6, 90e6, "12.5/90 MB/s (14%)"}, {3e6, 0, "3.0 MB/s"}, {0, 90e6, "0.0/90 MB/s (0%)"}} {
		if got := linkUse(tc.rate, tc.capacity); got != tc.want {
			t.Errorf("linkUse(%v, %v) = %q, want %q", tc.rate, tc.capacity, got, tc.want)
		}
	}
}
