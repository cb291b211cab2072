package runner

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"testing"
)

// TestRunnerCert: a runner makes its TLS client certificate once (PrepareCert or its
// first start) and gives every handler process the same one, on P-256.
func TestRunnerCert(t *testing.T) {
	r := &Runner{}
	if err := r.PrepareCert(); err != nil {
		t.Fatal(err)
	}
	c1, pem1, err := r.clientCert()
	if err != nil {
		t.Fatal(err)
	}
	_, pem2, _ := r.clientCert()
	if !bytes.Equal(pem1, pem2) {
		t.Error("a second start got another certificate")
	}
	cert, err := x509.ParseCertificate(c1.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", cert.PublicKey)
	}
	if _, pem3, _ := (&Runner{}).clientCert(); bytes.Equal(pem1, pem3) {
		t.Error("two runners share a certificate")
	}
}
