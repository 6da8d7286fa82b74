// Command generate loads a model and streams a completion of "In the beginning" to stdout through
// kiln's Go binding: the same task as samples/generate.c and the Python, Rust, C# and F# samples
// (a fixed seed, 40 tokens, the text on stdout and the speed on stderr).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"kiln.dev/kiln"
)

const (
	prompt    = "In the beginning"
	maxTokens = 40
	seed      = 0xC0FFEE // the C sample's default seed: the same seed and options give the same text
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: generate [MODEL]\n"+
			"Stream a %d-token completion of %q from MODEL (default: $KILN_MODEL, else\n"+
			"models/kjv-tiny relative to the current directory).\n"+
			"The text goes to stdout, the speed (tok/s) to stderr.\n", maxTokens, prompt)
	}
	flag.Parse()
	model := os.Getenv("KILN_MODEL")
	if model == "" {
		model = "models/kjv-tiny"
	}
	if flag.NArg() > 1 {
		flag.Usage()
		os.Exit(2)
	} else if flag.NArg() == 1 {
		model = flag.Arg(0)
	}
	if err := generate(model); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}

func generate(modelPath string) error {
	rt, err := kiln.NewRuntime(kiln.RuntimeOptions{Backend: kiln.BackendCPU})
	if err != nil {
		return err
	}
	defer rt.Close()
	model, err := rt.LoadModel(modelPath, nil)
	if err != nil {
		return err
	}
	defer model.Close()
	sessionSeed := uint64(seed)
	s, err := model.NewSession(kiln.SessionOptions{Seed: &sessionSeed})
	if err != nil {
		return err
	}
	defer s.Close()

	opts := kiln.DefaultGenerateOptions()
	opts.MaxTokens = maxTokens
	gen, err := s.Generate(context.Background(), prompt, opts, func(piece string, _ int32) error {
		_, err := fmt.Print(piece)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Println()
	tokensPerSecond := 0.0
	if gen.DecodeSeconds > 0 {
		tokensPerSecond = float64(gen.NGenerated) / gen.DecodeSeconds
	}
	fmt.Fprintf(os.Stderr, "%d tokens, %.1f tok/s\n", gen.NGenerated, tokensPerSecond)
	return nil
}
