package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
)

func init() { addCommand(25, newBlobCmd) }

// blobClient returns the blob API client of the configured server (client.server,
// client.token). Transfers have no overall timeout: a stalled one fails on the
// server's idle timeout or Ctrl-C.
func blobClient(app *App) *blobhttp.Client {
	hc, url := serverHTTP(app, 0)
	return &blobhttp.Client{BaseURL: url, Token: app.Cfg.V.GetString("client.token"), HTTP: hc}
}

func newBlobCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Upload, download, list and remove blobs (task inputs and outputs of any size)",
		Long: `Blobs are content-addressed files in the server's blob store (server.blob_store), named by
digest: "sha256:" and the 64 hex digits of the file's SHA-256. Tasks name them as inputs
(paddock task submit --input name=FILE uploads for you) and their handlers' output files
become blobs (paddock task output ID NAME).`,
	}
	cmd.AddCommand(newBlobPutCmd(app), newBlobGetCmd(app), newBlobLsCmd(app), newBlobRmCmd(app))
	return cmd
}

// putFile uploads path unless the server has its digest already, reporting progress
// on stderr; it returns the blob's Info and whether it was uploaded.
func putFile(ctx context.Context, app *App, c *blobhttp.Client, path string, quiet bool) (blob.Info, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return blob.Info{}, false, err
	}
	if !fi.Mode().IsRegular() {
		return blob.Info{}, false, fmt.Errorf("%s is not a regular file", path)
	}
	tr := newTransfer(app, "uploaded", path, fi.Size(), quiet)
	info, uploaded, err := c.PutFile(ctx, path, tr.progress)
	if err != nil {
		return blob.Info{}, false, err
	}
	if uploaded {
		tr.Finish(info.Size)
	} else {
		tr.Abandon()
	}
	return info, uploaded, nil
}

func newBlobPutCmd(app *App) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "put FILE...",
		Short: "Upload files as blobs; prints each one's digest and size (skips what the server has)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := blobClient(app)
			for _, p := range args {
				info, uploaded, err := putFile(cmd.Context(), app, c, p, quiet)
				if err != nil {
					return err
				}
				if !uploaded && !quiet {
					fmt.Fprintf(app.Err, "%s: already on the server, not uploaded\n", p)
				}
				fmt.Fprintf(app.Out, "%s\t%d\t%s\n", info.Digest, info.Size, p)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

// parseDigestArg checks a digest given as arg (what names it in errors).
func parseDigestArg(what, s string) (blob.Digest, error) {
	d, err := blob.ParseDigest(s)
	if err != nil {
		return "", usageError{fmt.Errorf("%s: %w (see 'paddock blob ls')", what, err)}
	}
	return d, nil
}

func newBlobGetCmd(app *App) *cobra.Command {
	var out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "get DIGEST [-o FILE]",
		Short: "Download a blob to stdout or a file (-o resumes a partial file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDigestArg("DIGEST", args[0])
			if err != nil {
				return err
			}
			return download(cmd.Context(), app, blobClient(app), d, out, d.String(), quiet)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE; a shorter FILE already there is resumed (default: stdout)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

// download writes blob d to path ("" or "-": stdout). An existing file shorter than the
// blob is taken as a partial download and resumed from its end with a Range request;
// the whole file is then checked against d.
func download(ctx context.Context, app *App, c *blobhttp.Client, d blob.Digest, path, what string, quiet bool) error {
	info, err := c.Stat(ctx, d)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("the server has no blob %s: check the digest with 'paddock blob ls' (blobs no task names are removed after server.blob_retention)", d)
		}
		return fmt.Errorf("asking the server for %s: %w", d, err)
	}
	if path == "" || path == "-" {
		tr := newTransfer(app, "downloaded", what, info.Size, quiet || isTerminal(app.Out))
		if _, err := c.Get(ctx, d, app.Out, 0, tr.progress); err != nil {
			return err
		}
		tr.Finish(info.Size)
		return nil
	}
	var offset int64
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		offset = fi.Size()
	}
	if offset > 0 && offset < info.Size && !quiet {
		fmt.Fprintf(app.Err, "%s: resuming at %s of %s\n", path, humanize.IBytes(uint64(offset)), humanize.IBytes(uint64(info.Size)))
	}
	tr := newTransfer(app, "downloaded", what, info.Size, quiet)
	if _, err := c.GetFile(ctx, d, path, tr.progress); err != nil {
		return fmt.Errorf("-o %s: %w (run the same command again to resume)", path, err)
	}
	tr.Finish(info.Size - min(offset, info.Size))
	return nil
}

func newBlobLsCmd(app *App) *cobra.Command {
	var limit int
	var after string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the server's blobs by digest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", limit)}
			}
			var from blob.Digest
			if after != "" {
				d, err := parseDigestArg("--after", after)
				if err != nil {
					return err
				}
				from = d
			}
			c := blobClient(app)
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			if !asJSON {
				fmt.Fprintln(tw, "DIGEST\tSIZE\tBYTES\tSTORED")
			}
			type jsonBlob struct {
				Digest string    `json:"digest"`
				Size   int64     `json:"size"`
				Stored time.Time `json:"stored"`
			}
			all := []jsonBlob{}
			shown := 0
			for {
				page := blob.DefaultListLimit
				if limit > 0 {
					page = min(page, limit-shown)
				}
				infos, next, err := c.List(cmd.Context(), from, page)
				if err != nil {
					return err
				}
				for _, i := range infos {
					if asJSON {
						all = append(all, jsonBlob{Digest: i.Digest.String(), Size: i.Size, Stored: i.ModTime.UTC()})
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", i.Digest, humanize.IBytes(uint64(i.Size)), i.Size, i.ModTime.Local().Format(time.RFC3339))
				}
				shown += len(infos)
				if next == "" || len(infos) == 0 || (limit > 0 && shown >= limit) {
					break
				}
				from = next
			}
			if asJSON {
				enc := json.NewEncoder(app.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	cmd.Flags().StringVar(&after, "after", "", "start after this digest")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the blobs as a JSON array of {digest, size, stored}")
	return cmd
}

func newBlobRmCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "rm DIGEST...",
		Short: "Remove blobs from the server's store",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := blobClient(app)
			for _, a := range args {
				d, err := parseDigestArg("DIGEST", a)
				if err != nil {
					return err
				}
				if err := c.Delete(cmd.Context(), d); err != nil {
					if errors.Is(err, blob.ErrNotFound) {
						return fmt.Errorf("the server has no blob %s (see 'paddock blob ls')", d)
					}
					return fmt.Errorf("removing %s: %w", d, err)
				}
				fmt.Fprintf(app.Out, "removed %s\n", d)
			}
			return nil
		},
	}
}
