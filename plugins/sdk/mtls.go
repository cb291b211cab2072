package sdk

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/paddockvm/paddock/plugins/internal/contract"
)

// go-plugin's AutoMTLS, with a P-256 key instead of go-plugin's P-521.
//
// When the agent (or any go-plugin client with AutoMTLS) starts a handler it puts its
// certificate in PLUGIN_CLIENT_CERT, and go-plugin's Serve answers with a certificate
// of its own, on a fresh P-521 key, in the handshake line's sixth field. Go has no
// assembly for P-521: under TCG its key, its self-signed certificate and its signature
// in the TLS handshake (which the agent verifies) took seconds of a handler's first
// start. So the SDK makes the server's certificate itself, on P-256, and hands go-plugin
// the TLS configuration AutoMTLS would have built (ServeConfig.TLSProvider); go-plugin
// then leaves the handshake line's certificate field empty, and the SDK fills it in on
// the way to stdout. A client sees exactly what AutoMTLS sends, with another key type.

// autoMTLS returns the server's TLS configuration for the client certificate clientPEM
// (PLUGIN_CLIENT_CERT), as go-plugin's AutoMTLS builds it, and the server
// certificate's DER.
func autoMTLS(clientPEM string) (*tls.Config, []byte, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(clientPEM)) {
		return nil, nil, errors.New("PLUGIN_CLIENT_CERT holds no PEM certificate")
	}
	cert, der, err := contract.AutoMTLSCert("Paddock handler")
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		ServerName:   "localhost",
	}, der, nil
}

// certInHandshake points os.Stdout at a pipe that copies to the real stdout, filling
// the first line's empty certificate field (go-plugin's handshake line,
// CORE|APP|NETWORK|ADDR|PROTOCOL|CERT[|MUX]) with der, base64 as AutoMTLS writes it.
// Everything after that line passes unchanged (go-plugin points os.Stdout at its own
// pipe once it has printed the line).
func certInHandshake(der []byte) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	out := os.Stdout
	os.Stdout = w
	go func() {
		br := bufio.NewReader(r)
		line, err := br.ReadString('\n')
		if err == nil {
			line = fillCert(line, der)
		}
		_, _ = io.WriteString(out, line)
		_, _ = io.Copy(out, br)
	}()
	return nil
}

// fillCert puts der in line's certificate field (the sixth) when it is empty.
func fillCert(line string, der []byte) string {
	body := strings.TrimRight(line, "\r\n")
	parts := strings.Split(body, "|")
	if len(parts) < 6 || parts[5] != "" {
		return line
	}
	parts[5] = base64.RawStdEncoding.EncodeToString(der)
	return strings.Join(parts, "|") + line[len(body):]
}

// tlsProvider returns go-plugin's ServeConfig.TLSProvider for this process: with
// PLUGIN_CLIENT_CERT set, AutoMTLS on P-256 (autoMTLS, certInHandshake); else nil
// (go-plugin serves without TLS, as it would).
func tlsProvider() (func() (*tls.Config, error), error) {
	clientPEM := os.Getenv("PLUGIN_CLIENT_CERT")
	if clientPEM == "" {
		return nil, nil
	}
	cfg, der, err := autoMTLS(clientPEM)
	if err != nil {
		return nil, fmt.Errorf("AutoMTLS: %w", err)
	}
	if err := certInHandshake(der); err != nil {
		return nil, fmt.Errorf("AutoMTLS: %w", err)
	}
	return func() (*tls.Config, error) { return cfg, nil }, nil
}
