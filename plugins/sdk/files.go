package sdk

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
)

// File is an input handed to the handler as a file (HandleRequest.input_files):
// inputs of any size arrive this way, never inside the gRPC call.
type File struct {
	// Name is the input's name (the key in Request.Files).
	Name string
	// Path is the file's absolute path, readable by the handler process.
	Path string
	// Size is its size in bytes, checked by the agent before the call.
	Size int64
	// Digest is its content digest, "sha256:<64 hex digits>".
	Digest string
}

// Open opens the file for reading; the caller closes it. Request.Input is
// usually handier: it works for inline inputs too.
func (f File) Open() (*os.File, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("opening input %q: %w", f.Name, err)
	}
	return fh, nil
}

// Input is one input, inline or a file, read as a stream (Read) or at offsets
// (ReadAt, Seek). Once the task's context is done, reads return its error, so a
// streaming loop stops by itself when the task is cancelled. Close it when done.
type Input interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
	// Name is the input's name.
	Name() string
	// Size is the input's size in bytes.
	Size() int64
}

// InputNames returns the names of every input, inline (Inputs) and file (Files),
// sorted.
func (r Request) InputNames() []string {
	names := make([]string, 0, len(r.Inputs)+len(r.Files))
	for n := range r.Inputs {
		names = append(names, n)
	}
	for n := range r.Files {
		if _, dup := r.Inputs[n]; !dup {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Input opens the input called name, whether it came inline (Inputs) or as a
// file (Files); a file wins if both have the name. The error for a missing input
// lists the inputs there are. The caller closes the Input.
func (r Request) Input(name string) (Input, error) {
	ctx := context.Background()
	if r.call != nil {
		ctx = r.call.ctx
	}
	if f, ok := r.Files[name]; ok {
		fh, err := f.Open()
		if err != nil {
			return nil, err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, fmt.Errorf("input %q: %w", name, err)
		}
		if st.Size() != f.Size {
			fh.Close()
			return nil, fmt.Errorf("input %q: file %s has %d bytes, the agent announced %d", name, f.Path, st.Size(), f.Size)
		}
		return &input{ctx: ctx, name: name, size: f.Size, r: io.NewSectionReader(fh, 0, f.Size), c: fh}, nil
	}
	if b, ok := r.Inputs[name]; ok {
		return &input{ctx: ctx, name: name, size: int64(len(b)), r: bytes.NewReader(b)}, nil
	}
	return nil, fmt.Errorf("no input named %q (inputs: %v)", name, r.InputNames())
}

// readerAtSeeker is what both *bytes.Reader and *io.SectionReader are.
type readerAtSeeker interface {
	io.Reader
	io.ReaderAt
	io.Seeker
}

// input implements Input over inline bytes or a section of a file.
type input struct {
	ctx  context.Context
	name string
	size int64
	r    readerAtSeeker
	c    io.Closer // the file; nil for inline inputs
}

func (in *input) Read(p []byte) (int, error) {
	if err := in.ctx.Err(); err != nil {
		return 0, err
	}
	return in.r.Read(p)
}

func (in *input) ReadAt(p []byte, off int64) (int, error) {
	if err := in.ctx.Err(); err != nil {
		return 0, err
	}
	return in.r.ReadAt(p, off)
}

func (in *input) Seek(off int64, whence int) (int64, error) { return in.r.Seek(off, whence) }
func (in *input) Name() string                              { return in.name }
func (in *input) Size() int64                               { return in.size }

func (in *input) Close() error {
	if in.c == nil {
		return nil
	}
	c := in.c
	in.c = nil
	return c.Close()
}

// nameRE has no counted repetition ({0,127} would compile to 128 copies of its class,
// about 100 KB of heap in the agent and in every handler); ValidName checks the length.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*$`)

// ValidName reports whether name can be an input or output name: 1-128 letters,
// digits, '.', '_' or '-', not starting with '.' (a plain file name that cannot
// escape its directory). The same rule as api/guestabi.ValidName.
func ValidName(name string) bool { return len(name) <= 128 && nameRE.MatchString(name) }

// NameRule says what ValidName accepts, for error messages.
const NameRule = "1-128 letters, digits, '.', '_' or '-', not starting with '.'"
