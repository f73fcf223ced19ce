// gristmill's entry point for Go jobs, per runtimes/PROTOCOL.md: the real `main`.
//
// The build step places this file in its own package beside the user's `package inner`,
// whose generated gristmill_entry.go exports the user's function (`GristmillEntry`) and
// its parameters' names (`GristmillParams`). The job message on fd 4 is the JSON object
// of arguments by name; each is decoded into its parameter's own type (reflection), the
// function is called, and its result or error is written as one JSON envelope on fd 3.
// The process then exits at once: goroutines still running do not hold the outcome.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"

	inner "gristmill.job"
)

// The module path of the user's package, as -trimpath writes it in stack frames.
const userModule = "gristmill.job/"

type frame struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Function string `json:"function,omitempty"`
}

type jobError struct {
	Name    string  `json:"name"`
	Message string  `json:"message"`
	Stack   []frame `json:"stack,omitempty"`
}

type envelope struct {
	Result  *json.RawMessage `json:"result,omitempty"`
	Error   *jobError        `json:"error,omitempty"`
	Verdict string           `json:"verdict,omitempty"`
}

var channel = os.NewFile(3, "result")

func finish(e envelope) {
	data, err := json.Marshal(e)
	if err != nil {
		data, _ = json.Marshal(envelope{Error: &jobError{Name: "ResultError", Message: err.Error()}, Verdict: "ERROR"})
	}
	if _, err := channel.Write(data); err != nil {
		os.Exit(2)
	}
	channel.Close()
	os.Exit(0)
}

func fail(verdict, name, message string, stack []frame) {
	finish(envelope{Error: &jobError{Name: name, Message: message, Stack: stack}, Verdict: verdict})
}

// userFrames are the frames of the user's own files, innermost last.
func userFrames(skip int) []frame {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(skip, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var found []frame
	for {
		f, more := frames.Next()
		if own := strings.TrimPrefix(f.File, userModule); own != f.File && own != "gristmill_entry.go" && !strings.HasPrefix(own, "gristmill_main/") {
			function := f.Function
			if i := strings.LastIndex(function, "."); i >= 0 {
				function = function[i+1:]
			}
			found = append(found, frame{File: strings.TrimPrefix(f.File, userModule), Line: f.Line, Function: function})
		}
		if !more {
			break
		}
	}
	for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
		found[i], found[j] = found[j], found[i]
	}
	return found
}

// typeName is an error's type where it is a named type of its own, else "error".
func typeName(err error) string {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() {
	case "errors", "fmt", "":
		return "error"
	}
	return t.String()
}

func decodeArgs(fn reflect.Type, params []string, raw []byte) ([]reflect.Value, error) {
	var args map[string]json.RawMessage
	if err := json.Unmarshal(raw, &args); err != nil {
		return nil, fmt.Errorf("the arguments are not a JSON object: %v", err)
	}
	if fn.NumIn() != len(params) {
		return nil, fmt.Errorf("the entry point has %d parameters, %d names", fn.NumIn(), len(params))
	}
	for name := range args {
		known := false
		for _, p := range params {
			known = known || p == name
		}
		if !known {
			return nil, fmt.Errorf("unknown argument %s", strconv.Quote(name))
		}
	}
	values := make([]reflect.Value, len(params))
	for i, name := range params {
		t := fn.In(i)
		value := reflect.New(t)
		data, given := args[name]
		if !given {
			if t.Kind() != reflect.Pointer {
				return nil, fmt.Errorf("missing argument %s", strconv.Quote(name))
			}
		} else if err := json.Unmarshal(data, value.Interface()); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return nil, fmt.Errorf("argument %s: %s does not fit %s", strconv.Quote(name), typeErr.Value, t)
			}
			return nil, fmt.Errorf("argument %s: %v", strconv.Quote(name), err)
		}
		values[i] = value.Elem()
	}
	return values, nil
}

// takeContext sets the job's context variables that head the job message (NAME=value,
// each ended by a NUL byte, then a lone NUL) and returns the message after them: a warm
// sandbox's program was started before its job, and so before its environment, was known.
func takeContext(data []byte) []byte {
	for {
		end := bytes.IndexByte(data, 0)
		if end <= 0 {
			return data[end+1:]
		}
		name, value, _ := strings.Cut(string(data[:end]), "=")
		os.Setenv(name, value)
		data = data[end+1:]
	}
}

func main() {
	message, err := io.ReadAll(os.NewFile(4, "job"))
	if err != nil {
		fail("ERROR", "ProtocolError", "reading the job message: "+err.Error(), nil)
	}
	message = takeContext(message)
	fn := reflect.ValueOf(inner.GristmillEntry)
	args, err := decodeArgs(fn.Type(), inner.GristmillParams, message)
	if err != nil {
		fail("INVALID_ARGUMENTS", "InvalidArguments", err.Error(), nil)
	}
	defer func() {
		if value := recover(); value != nil {
			name := "panic"
			if e, ok := value.(error); ok {
				var re runtime.Error
				if errors.As(e, &re) {
					name = "runtime.Error"
				}
			}
			fail("ERROR", name, fmt.Sprint(value), userFrames(3))
		}
	}()
	results := fn.Call(args)
	errorType := reflect.TypeOf((*error)(nil)).Elem()
	var result any
	for i, r := range results {
		if fn.Type().Out(i) == errorType {
			if !r.IsNil() {
				e := r.Interface().(error)
				fail("ERROR", typeName(e), e.Error(), nil)
			}
			continue
		}
		result = r.Interface()
	}
	data, err := json.Marshal(result)
	if err != nil {
		fail("ERROR", "ResultError", "the result is not JSON: "+err.Error(), nil)
	}
	raw := json.RawMessage(data)
	finish(envelope{Result: &raw})
}
