// Package deploy holds no code: it is the deployment files — systemd units
// (deploy/systemd), the documented example configuration (deploy/paddock.example.yaml,
// the output of `paddock config example`), the Prometheus scrape configuration
// (deploy/prometheus) and the cluster PKI script (deploy/pki.sh) — and the tests that
// keep them, and the repository's Vagrantfile, true:
//
//	go test -count=1 ./deploy/
//
// runs `vagrant validate` (vagrant and vagrant-libvirt: `make setup`), loads the
// configurations the Vagrantfile writes into its VMs with Paddock's own loader,
// verifies the systemd units with systemd-analyze, and completes a mutual-TLS
// handshake with certificates made by deploy/pki.sh. Missing tools skip through
// internal/testutil (failures under PADDOCK_REQUIRE_VM=1). No box is downloaded: the
// VMs themselves are not started by any test.
package deploy
