package inner

import "fmt"

// main greets someone, a number of times.
func main(name string, times int) (map[string]any, error) {
	if times < 0 {
		return nil, fmt.Errorf("times must not be negative, got %d", times)
	}
	greetings := make([]string, times)
	for i := range greetings {
		greetings[i] = "hello, " + name
	}
	return map[string]any{"greetings": greetings, "count": times}, nil
}
