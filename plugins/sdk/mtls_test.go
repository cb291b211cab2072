package sdk

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestFillCert(t *testing.T) {
	der := []byte{1, 2, 3}
	c := base64.RawStdEncoding.EncodeToString(der)
	tests := []struct{ name, in, want string }{
		{"empty field filled", "1|1|unix|/tmp/p|grpc|\n", "1|1|unix|/tmp/p|grpc|" + c + "\n"},
		{"with multiplexing field", "1|1|unix|/tmp/p|grpc||true\n", "1|1|unix|/tmp/p|grpc|" + c + "|true\n"},
		{"a certificate already there", "1|1|unix|/tmp/p|grpc|abc\n", "1|1|unix|/tmp/p|grpc|abc\n"},
		{"not a handshake line", "hello\n", "hello\n"},
		{"CRLF kept", "1|1|unix|/tmp/p|grpc|\r\n", "1|1|unix|/tmp/p|grpc|" + c + "\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fillCert(tc.in, der); got != tc.want {
				t.Errorf("fillCert(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestAutoMTLS: the server certificate is P-256 and for localhost; a
// PLUGIN_CLIENT_CERT that is no certificate is refused naming it.
func TestAutoMTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	client, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cfg, der, err := autoMTLS(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: client})))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("ClientAuth %v, want RequireAndVerifyClientCert as go-plugin's AutoMTLS", cfg.ClientAuth)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("server key %T, want ECDSA P-256", cert.PublicKey)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if _, _, err := autoMTLS("not a certificate"); err == nil || !strings.Contains(err.Error(), "PLUGIN_CLIENT_CERT") {
		t.Errorf("a bad PLUGIN_CLIENT_CERT: err %v, want one naming it", err)
	}
}
