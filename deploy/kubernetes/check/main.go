// check decodes Kubernetes manifests strictly into the API's own Go types (k8s.io/api):
// an unknown or misspelt field, a value of the wrong type or a kind this checker does not
// know fails it. No cluster is needed, and no schema download (only the Go module proxy).
//
//	go run . ../*.yaml          (-json: each object printed as one line of JSON, for tests)
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

type meta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// kinds are the objects gristmill's manifests use, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

var printJSON = false

func check(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	count := 0
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		if len(strings.TrimSpace(stripComments(string(doc)))) == 0 {
			continue
		}
		var m meta
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return count, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		make, ok := kinds[m.APIVersion+"/"+m.Kind]
		if !ok {
			return count, fmt.Errorf("%s: document %d: unknown kind %s/%s", path, i+1, m.APIVersion, m.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, make()); err != nil {
			return count, fmt.Errorf("%s: %s: %w", path, m.Kind, err)
		}
		if printJSON {
			text, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return count, err
			}
			fmt.Println(string(text))
		}
		count++
	}
	return count, nil
}

func stripComments(text string) string {
	var kept []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

func main() {
	failed := false
	paths := os.Args[1:]
	if len(paths) > 0 && paths[0] == "-json" {
		printJSON, paths = true, paths[1:]
	}
	for _, path := range paths {
		count, err := check(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "invalid:", err)
			failed = true
			continue
		}
		if !printJSON {
			fmt.Printf("ok: %s (%d objects)\n", path, count)
		}
	}
	if failed || len(paths) == 0 {
		os.Exit(1)
	}
}
