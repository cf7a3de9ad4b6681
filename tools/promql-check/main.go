// promql-check parses PromQL expressions with Prometheus' own parser (the version pinned in
// versions.toml, [observability] prometheus_module_version) and reports, for each one, its parse
// errors and the metric names its selectors reference.
//
// Input (stdin): JSON lines, {"id": "...", "expr": "..."}.
// Output (stdout): one JSON line per input, in order:
//
//	{"id": "...", "errors": ["..."], "metrics": ["a", "b"], "unnamed_selectors": 0}
//
// The exit status is 0 when every line was read (parse errors are data, not failures), 2 on
// malformed input. `promql-check -version` prints the prometheus module version it was built with.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const prometheusModule = "github.com/prometheus/prometheus"

type request struct {
	ID   string `json:"id"`
	Expr string `json:"expr"`
}

type result struct {
	ID     string   `json:"id"`
	Errors []string `json:"errors"`
	// Metric names referenced by vector and range selectors (a __name__="x" matcher counts as x).
	Metrics []string `json:"metrics"`
	// Selectors with no fixed metric name (only a regex on __name__, or none): not checkable.
	UnnamedSelectors int `json:"unnamed_selectors"`
}

func check(p parser.Parser, req request) result {
	res := result{ID: req.ID, Errors: []string{}, Metrics: []string{}}
	expr, err := p.ParseExpr(req.Expr)
	if err != nil {
		var perrs parser.ParseErrors
		if errors.As(err, &perrs) {
			for _, e := range perrs {
				res.Errors = append(res.Errors, e.Error())
			}
		} else {
			res.Errors = append(res.Errors, err.Error())
		}
		return res
	}
	seen := map[string]bool{}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			res.UnnamedSelectors++
		} else {
			seen[name] = true
		}
		return nil
	})
	for name := range seen {
		res.Metrics = append(res.Metrics, name)
	}
	sort.Strings(res.Metrics)
	return res
}

func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == prometheusModule {
			return dep.Version
		}
	}
	return "unknown"
}

func main() {
	version := flag.Bool("version", false, "print the prometheus module version and exit")
	flag.Parse()
	if *version {
		fmt.Println(moduleVersion())
		return
	}
	// The defaults of a Prometheus server started without feature flags: experimental
	// functions and syntax are refused, as they would be at query time.
	p := parser.NewParser(parser.Options{})
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	out := json.NewEncoder(os.Stdout)
	line := 0
	for in.Scan() {
		line++
		if len(in.Bytes()) == 0 {
			continue
		}
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "promql-check: line %d: not a JSON object {\"id\", \"expr\"}: %v\n", line, err)
			os.Exit(2)
		}
		if err := out.Encode(check(p, req)); err != nil {
			fmt.Fprintf(os.Stderr, "promql-check: writing output: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: reading input: %v\n", err)
		os.Exit(2)
	}
}
