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
// Layout of a directory: a/<action id hex> holds "<output id hex> <size>", and
// o/<output id hex> the output itself. Entries are written to a temporary name and
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

func (c *cache) get(action []byte) response {
	name := hex.EncodeToString(action)
	for _, dir := range append([]string{c.write}, c.read...) {
		entry, err := os.ReadFile(filepath.Join(dir, "a", name))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(entry))
		if len(fields) != 2 {
			continue
		}
		output, err1 := hex.DecodeString(fields[0])
		size, err2 := strconv.ParseInt(fields[1], 10, 64)
		path := filepath.Join(dir, "o", fields[0])
		info, err3 := os.Stat(path)
		if err1 != nil || err2 != nil || err3 != nil || info.Size() != size {
			continue
		}
		return response{OutputID: output, Size: size, DiskPath: path}
	}
	return response{Miss: true}
}

func writeAtomically(path string, write func(*os.File) error) error {
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
	output := hex.EncodeToString(req.OutputID)
	path := filepath.Join(c.write, "o", output)
	err := writeAtomically(path, func(f *os.File) error {
		n, err := io.Copy(f, body)
		if err == nil && n != req.BodySize {
			err = fmt.Errorf("body of %d bytes, %d announced", n, req.BodySize)
		}
		return err
	})
	if err == nil {
		entry := fmt.Sprintf("%s %d\n", output, req.BodySize)
		err = writeAtomically(filepath.Join(c.write, "a", hex.EncodeToString(req.ActionID)),
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
	for _, sub := range []string{"a", "o"} {
		if err := os.MkdirAll(filepath.Join(c.write, sub), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "cacheprog:", err)
			os.Exit(1)
		}
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
