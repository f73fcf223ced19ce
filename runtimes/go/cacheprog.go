// The build cache program (GOCACHEPROG) of gristmill's Go builds.
//
// Usage: cacheprog WRITE_DIR [READ_DIR...]
//
// It answers the go command's "get" from WRITE_DIR, then from each READ_DIR in order,
// and stores every "put" in WRITE_DIR only. The service's trusted prime step runs it
// with the shared cache as WRITE_DIR; a job's build runs it with a private directory as
// WRITE_DIR and the shared cache, mounted read-only, as READ_DIR: a job's build reuses
// the compiled standard library and can never write where another job's build reads.
//
// Every directory has the layout of Go's own build cache (GOCACHE): <xx>/<action id>-a
// holds "v1 <action id> <output id> <size> <time>", <xx>/<output id>-d the output. So
// the prime step fills the shared cache with a plain `go build` (GOCACHE), and a
// READ_DIR may be any Go build cache. Files are written to a temporary name and
// renamed, so a reader never sees half an entry.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type request struct {
	ID       int64
	Command  string
	ActionID []byte `json:",omitempty"`
	OutputID []byte `json:",omitempty"`
	BodySize int64  `json:",omitempty"`
}

type response struct {
	ID            int64
	Err           string   `json:",omitempty"`
	KnownCommands []string `json:",omitempty"`
	Miss          bool     `json:",omitempty"`
	OutputID      []byte   `json:",omitempty"`
	Size          int64    `json:",omitempty"`
	DiskPath      string   `json:",omitempty"`
}

type cache struct {
	write string
	read  []string
}

func entryPath(dir string, id []byte, kind string) string {
	name := hex.EncodeToString(id)
	if len(name) < 2 {
		return filepath.Join(dir, "invalid-"+kind)
	}
	return filepath.Join(dir, name[:2], name+"-"+kind)
}

func (c *cache) get(action []byte) response {
	for _, dir := range append([]string{c.write}, c.read...) {
		entry, err := os.ReadFile(entryPath(dir, action, "a"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(entry))
		if len(fields) != 5 || fields[0] != "v1" || fields[1] != hex.EncodeToString(action) {
			continue
		}
		output, err1 := hex.DecodeString(fields[2])
		size, err2 := strconv.ParseInt(fields[3], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		path := entryPath(dir, output, "d")
		info, err := os.Stat(path)
		if err != nil || !info.Mode().IsRegular() || info.Size() != size {
			continue
		}
		return response{OutputID: output, Size: size, DiskPath: path}
	}
	return response{Miss: true}
}

func writeAtomically(path string, write func(*os.File) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (c *cache) put(req request, body io.Reader) response {
	path := entryPath(c.write, req.OutputID, "d")
	err := writeAtomically(path, func(f *os.File) error {
		n, err := io.Copy(f, body)
		if err == nil && n != req.BodySize {
			err = fmt.Errorf("body of %d bytes, %d announced", n, req.BodySize)
		}
		return err
	})
	if err == nil {
		entry := fmt.Sprintf("v1 %x %x %20d %20d\n", req.ActionID, req.OutputID, req.BodySize, time.Now().UnixNano())
		err = writeAtomically(entryPath(c.write, req.ActionID, "a"),
			func(f *os.File) error { _, err := f.WriteString(entry); return err })
	}
	if err != nil {
		return response{Err: err.Error()}
	}
	return response{DiskPath: path}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cacheprog WRITE_DIR [READ_DIR...]")
		os.Exit(2)
	}
	c := &cache{write: os.Args[1], read: os.Args[2:]}
	if err := os.MkdirAll(c.write, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "cacheprog:", err)
		os.Exit(1)
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	decoder := json.NewDecoder(in)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	send := func(r response) {
		if err := encoder.Encode(r); err != nil {
			os.Exit(1)
		}
		out.Flush()
	}
	send(response{KnownCommands: []string{"get", "put", "close"}})
	for {
		var req request
		if err := decoder.Decode(&req); err != nil {
			return
		}
		var r response
		switch req.Command {
		case "get":
			r = c.get(req.ActionID)
		case "put":
			var body []byte
			if req.BodySize > 0 {
				if err := decoder.Decode(&body); err != nil {
					fmt.Fprintln(os.Stderr, "cacheprog: reading a body:", err)
					os.Exit(1)
				}
			}
			r = c.put(req, strings.NewReader(string(body)))
		case "close":
			r.ID = req.ID
			send(r)
			return
		default:
			r.Err = "unknown command " + req.Command
		}
		r.ID = req.ID
		send(r)
	}
}
