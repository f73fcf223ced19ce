// A queue worker in Go: sends one job to gristmill's Execute and prints its outcome.
//
//	GRISTMILL_TARGET=127.0.0.1:50051 go run . python 'def main(a: int, b: int): return a + b' '{"a": 40, "b": 2}'
//
// GRISTMILL_TIMEOUT_S bounds the call, the wait for a server that is not up yet included
// (default 120).
// The job's verdict is data (a program failing is not an RPC error); the exit code is 0
// for SUCCESS, 1 for any other verdict, 2 when the call itself failed.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	gristmillv1 "gristmill.dev/go/gristmill/v1"
)

// serviceConfig retries UNAVAILABLE (a server restarting) like the Python client does;
// the job id is the server's idempotency key, so a retry never runs the job twice.
const serviceConfig = `{"methodConfig": [{"name": [{"service": "gristmill.v1.Runtime"}],
  "waitForReady": true,
  "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.2s", "maxBackoff": "2s",
    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go-worker LANGUAGE CODE ARGS_JSON")
		os.Exit(2)
	}
	outcome, err := execute(envOr("GRISTMILL_TARGET", "127.0.0.1:50051"), os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-worker:", err)
		os.Exit(2)
	}
	printed, _ := json.Marshal(map[string]any{
		"verdict": outcome.GetVerdict().String(),
		"result":  json.RawMessage(orNull(outcome.GetResultJson())),
		"stdout":  string(outcome.GetStdout().GetData()),
		"error":   outcome.GetError().GetMessage(),
	})
	fmt.Println(string(printed))
	if outcome.GetVerdict() != gristmillv1.Verdict_SUCCESS {
		os.Exit(1)
	}
}

func execute(target, language, code, argsJSON string) (*gristmillv1.Outcome, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The deadline bounds the job too: the server kills it when the call goes away.
	timeout, err := strconv.ParseFloat(envOr("GRISTMILL_TIMEOUT_S", "120"), 64)
	if err != nil {
		return nil, fmt.Errorf("GRISTMILL_TIMEOUT_S: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout*float64(time.Second)))
	defer cancel()
	// A retry must carry the same id: it is made once, before the first attempt.
	job := &gristmillv1.Job{Id: newJobID(), Language: language, Code: code, ArgsJson: argsJSON}
	return gristmillv1.NewRuntimeClient(conn).Execute(ctx, &gristmillv1.ExecuteRequest{Job: job})
}

// newJobID is a random (version 4) UUID.
func newJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func orNull(text string) string {
	if text == "" {
		return "null"
	}
	return text
}
