package kiln

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

type reference struct {
	PromptText string  `json:"prompt_text"`
	TokenIDs   []int32 `json:"token_ids"`
	GreedyIDs  []int32 `json:"greedy_continuation_ids"`
	GreedyText string  `json:"greedy_continuation_text"`
	VocabSize  int32   `json:"vocab_size"`
}

func tinyDir() string {
	src := os.Getenv("KILN_SOURCE_DIR")
	if src == "" {
		src = "../.."
	}
	return filepath.Join(src, "tests", "fixtures", "tiny-qwen2")
}

func loadReference(t *testing.T) reference {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tinyDir(), "hf_ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// fixture is a CPU runtime (one thread: CI shares two cores) with tiny-qwen2 loaded.
func fixture(t *testing.T) (*Runtime, *Model) {
	t.Helper()
	rt, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, NThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rt.LoadModel(tinyDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Close()
		runtime.GC()
		_ = rt.Close()
	})
	return rt, m
}

func greedy(n int) GenerateOptions {
	o := DefaultGenerateOptions()
	o.Sampling.Temperature = 0
	o.MaxTokens = int32(n)
	o.IgnoreEOS = true
	return o
}

func newSession(t *testing.T, m *Model) *Session {
	t.Helper()
	s, err := m.NewSession(SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestInfoAndABI(t *testing.T) {
	if err := CheckABI(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(Version(), "0.1.0") {
		t.Errorf("version %q", Version())
	}
	rt, m := fixture(t)
	info, err := m.Info()
	if err != nil || info.Architecture != "Qwen2ForCausalLM" || info.VocabSize != 512 {
		t.Fatalf("info %+v, %v", info, err)
	}
	eos, err := m.EOSIDs()
	if err != nil || len(eos) == 0 || eos[0] != info.EOSTokenID {
		t.Errorf("eos %v, %v", eos, err)
	}
	ri, err := rt.Info()
	if err != nil || ri.Backend != BackendCPU {
		t.Errorf("runtime info %+v, %v", ri, err)
	}
}

// On the CPU: F32 is the CPU's own precision, BF16 (a CUDA precision) is StatusUnsupported.
func TestPrecisionOption(t *testing.T) {
	rt, _ := fixture(t)
	m, err := rt.LoadModelWith(tinyDir(), LoadOptions{Precision: PrecisionF32})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := m.Info(); err != nil || info.VocabSize != 512 {
		t.Errorf("F32 info %+v, %v", info, err)
	}
	_ = m.Close()
	var kerr *Error
	_, err = rt.LoadModelWith(tinyDir(), LoadOptions{Precision: PrecisionBF16})
	if !errors.As(err, &kerr) || kerr.Status != StatusUnsupported ||
		!strings.Contains(kerr.Message, "KILN_PRECISION_BF16") {
		t.Errorf("BF16 on the CPU: %v", err)
	}
}

func TestTokenizeMatchesTransformersAndRoundTrips(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	ids, err := m.Tokenize(ref.PromptText, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids[:len(ref.TokenIDs)], ref.TokenIDs) {
		t.Errorf("ids %v, want prefix %v", ids, ref.TokenIDs)
	}
	if text, _ := m.Detokenize(ids, false); text != ref.PromptText {
		t.Errorf("round trip %q", text)
	}
	var pieces []byte
	for _, id := range ref.TokenIDs {
		p, err := m.TokenToPiece(id)
		if err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, p...)
	}
	if want, _ := m.DetokenizeBytes(ref.TokenIDs, false); string(pieces) != string(want) {
		t.Errorf("pieces %q, detokenized %q", pieces, want)
	}
}

// tokenizerPhrase is the prefix of prompt_text whose HF ids are exactly hf_ref.json's token_ids
// (its prompt_decoded).
const tokenizerPhrase = "The quick brown fox jumps over"

func checkTokenizer(t *testing.T, tok *Tokenizer, ref reference) {
	t.Helper()
	if text, err := tok.Decode(ref.TokenIDs, false); err != nil || text != tokenizerPhrase {
		t.Errorf("decode(token_ids) = %q, %v; want %q", text, err, tokenizerPhrase)
	}
	ids, err := tok.Encode(tokenizerPhrase, false, false)
	if err != nil || !reflect.DeepEqual(ids, ref.TokenIDs) {
		t.Errorf("encode = %v, %v; want %v", ids, err, ref.TokenIDs)
	}
	if text, err := tok.Decode(ids, false); err != nil || text != tokenizerPhrase {
		t.Errorf("round trip %q, %v", text, err)
	}
	if n, err := tok.VocabSize(); err != nil || n != ref.VocabSize || n != 512 {
		t.Errorf("vocab size %d, %v; want %d", n, err, ref.VocabSize)
	}
}

func TestStandaloneAndModelTokenizersMatchTransformers(t *testing.T) {
	ref := loadReference(t)
	if !strings.HasPrefix(ref.PromptText, tokenizerPhrase) {
		t.Fatalf("prompt_text %q does not start with %q", ref.PromptText, tokenizerPhrase)
	}
	tok, err := LoadTokenizer(tinyDir())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Owned() {
		t.Error("a loaded tokenizer is owned")
	}
	checkTokenizer(t, tok, ref)
	_ = tok.Close()
	_ = tok.Close() // idempotent
	if _, err := tok.Encode(tokenizerPhrase, false, false); err == nil {
		t.Error("encode on a closed tokenizer succeeded")
	}

	_, m := fixture(t)
	borrowed, err := m.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	if borrowed.Owned() {
		t.Error("a model's tokenizer is borrowed")
	}
	checkTokenizer(t, borrowed, ref)
	_ = borrowed.Close() // detaches only: the model's tokenizer still works
	again, err := m.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	checkTokenizer(t, again, ref)
	_ = m.Close()
	if _, err := again.VocabSize(); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("a borrowed tokenizer of a closed model gave %v", err)
	}

	if _, err := LoadTokenizer(filepath.Join(tinyDir(), "no-such-dir")); !errors.Is(err, &Error{Status: StatusNotFound}) {
		t.Errorf("missing tokenizer.json gave %v", err)
	}
}

func TestGreedyGenerationEqualsTransformersAndPiecesConcatenate(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	s := newSession(t, m)
	var pieces []string
	g, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(len(ref.GreedyIDs)),
		func(p string, _ int32) error { pieces = append(pieces, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.IDs, ref.GreedyIDs) || g.StopReason != StopMaxTokens || g.Text != ref.GreedyText {
		t.Errorf("got %+v, want ids %v text %q", g, ref.GreedyIDs, ref.GreedyText)
	}
	if text, _ := m.Detokenize(g.IDs, false); strings.Join(pieces, "") != text || len(pieces) < 2 {
		t.Errorf("pieces %q, detokenized %q", pieces, text)
	}
}

func TestForwardAndSampleAgree(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	s := newSession(t, m)
	logits, err := s.Forward(ref.TokenIDs, LogitsLast)
	if err != nil || len(logits) != int(ref.VocabSize) {
		t.Fatalf("%d logits, %v", len(logits), err)
	}
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	greedySampling := DefaultSampling()
	greedySampling.Temperature = 0
	id, err := s.Sample(logits, greedySampling)
	if err != nil || id != int32(best) || id != ref.GreedyIDs[0] {
		t.Errorf("sample %d (%v), argmax %d, reference %d", id, err, best, ref.GreedyIDs[0])
	}
	if n, _, _ := s.Position(); n != int32(len(ref.TokenIDs)) {
		t.Errorf("position %d", n)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
}

func TestStopAfterNPiecesWithErrStopAndWithContext(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	s := newSession(t, m)
	n := 0
	g, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(100), func(string, int32) error {
		n++
		if n == 3 {
			return ErrStop
		}
		return nil
	})
	if err != nil || g.StopReason != StopCallback || g.NGenerated != 3 || !reflect.DeepEqual(g.IDs, ref.GreedyIDs[:3]) {
		t.Fatalf("ErrStop: %+v, %v", g, err)
	}

	_ = s.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	_, err = s.GenerateIDs(ctx, ref.TokenIDs, greedy(100), func(string, int32) error {
		n++
		if n == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Fatalf("context: err %v after %d pieces", err, n)
	}
	_ = s.Reset()
	g, err = s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(2), nil)
	if err != nil || !reflect.DeepEqual(g.IDs, ref.GreedyIDs[:2]) {
		t.Fatalf("session unusable after cancel: %+v, %v", g, err)
	}
}

func TestCancelFromAnotherGoroutine(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	s := newSession(t, m)
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error)
	go func() {
		_, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(4000), func(string, int32) error {
			once.Do(func() { close(started) })
			time.Sleep(time.Millisecond)
			return nil
		})
		done <- err
	}()
	<-started
	if err := s.Cancel(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, &Error{Status: StatusCancelled}) {
		t.Fatalf("want a cancelled error, got %v", err)
	}
}

func TestPanickingCallbackIsContainedAndReported(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	s := newSession(t, m)
	calls := 0
	_, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(8), func(string, int32) error {
		calls++
		panic("from the callback")
	})
	if err == nil || !strings.Contains(err.Error(), "from the callback") || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	_ = s.Reset()
	if g, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(2), nil); err != nil || !reflect.DeepEqual(g.IDs, ref.GreedyIDs[:2]) {
		t.Fatalf("session unusable: %+v %v", g, err)
	}
}

func TestErrorsCarryKilnStatusAndMessage(t *testing.T) {
	rt, m := fixture(t)
	_, err := rt.LoadModel("/no/such/model-dir", nil)
	var ke *Error
	if !errors.As(err, &ke) || ke.Status != StatusNotFound || ke.StatusName() != "KILN_ERR_NOT_FOUND" ||
		!strings.Contains(ke.Message, "/no/such/model-dir") {
		t.Fatalf("got %v", err)
	}
	s := newSession(t, m)
	if _, err := s.Forward([]int32{100000}, LogitsLast); !errors.Is(err, &Error{Status: StatusOutOfRange}) {
		t.Errorf("out of range: %v", err)
	}
	small, err := m.NewSession(SessionOptions{ContextLength: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := small.Forward([]int32{1, 2, 3, 4, 5}, LogitsLast); !errors.Is(err, &Error{Status: StatusContextFull}) {
		t.Errorf("context full: %v", err)
	}
	if _, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, NThreads: -3}); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("bad threads: %v", err)
	}
	if _, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, TensorParallel: 2}); !errors.Is(err, &Error{Status: StatusUnsupported}) {
		t.Errorf("tensor parallel on the CPU: %v", err)
	}
	if err := rt.Close(); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("closing a runtime with open models must fail, got %v", err)
	}
	_ = s.Close()
	if _, err := s.Forward([]int32{1}, LogitsLast); err == nil {
		t.Error("a closed session must fail")
	}
}

func TestProgressAndLogCallbacks(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	rt, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, NThreads: 1, LogLevel: LogDebug,
		Log: func(_ LogLevel, msg string) { mu.Lock(); lines = append(lines, msg); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var fractions []float32
	m, err := rt.LoadModel(tinyDir(), func(f float32, _ string) bool { fractions = append(fractions, f); return false })
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if len(fractions) == 0 || fractions[len(fractions)-1] != 1 {
		t.Errorf("fractions %v", fractions)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "loaded Qwen2ForCausalLM") {
		t.Errorf("log %q", lines)
	}
	if _, err := rt.LoadModel(tinyDir(), func(float32, string) bool { return true }); !errors.Is(err, &Error{Status: StatusCancelled}) {
		t.Errorf("cancelled load: %v", err)
	}
	if _, err := rt.LoadModel(tinyDir(), func(float32, string) bool { panic("progress boom") }); err == nil || !strings.Contains(err.Error(), "progress boom") {
		t.Errorf("panicking progress: %v", err)
	}

	var global []string
	if err := SetLogCallback(func(_ LogLevel, msg string) { mu.Lock(); global = append(global, msg); mu.Unlock() }, LogDebug); err != nil {
		t.Fatal(err)
	}
	other, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, NThreads: 1, LogLevel: LogDebug})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	_ = SetLogCallback(nil, LogWarn)
	if !strings.Contains(strings.Join(global, "\n"), "runtime created") {
		t.Errorf("process-wide log %q", global)
	}
}

func TestTwoGoroutinesGenerateOnTwoSessionsOfOneModel(t *testing.T) {
	ref := loadReference(t)
	_, m := fixture(t)
	var wg sync.WaitGroup
	results := make([][]int32, 2)
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := m.NewSession(SessionOptions{})
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			g, err := s.GenerateIDs(context.Background(), ref.TokenIDs, greedy(len(ref.GreedyIDs)), nil)
			if err == nil {
				results[i] = g.IDs
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || !reflect.DeepEqual(results[i], ref.GreedyIDs) {
			t.Errorf("goroutine %d: %v %v", i, results[i], errs[i])
		}
	}
}

func openChildren(rt *Runtime) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.children
}

func TestManyHandlesClosedOrCollectedAreFreed(t *testing.T) {
	rt, m := fixture(t)
	base := openChildren(rt)
	for i := 0; i < 50; i++ {
		s, err := m.NewSession(SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		extra, err := rt.LoadModel(tinyDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		extra.Close()
	}
	if got := openChildren(rt); got != base {
		t.Fatalf("explicit Close left %d handles open", got-base)
	}
	for i := 0; i < 50; i++ {
		if _, err := m.NewSession(SessionOptions{}); err != nil { // dropped: the finalizer frees it
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for openChildren(rt) != base && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := openChildren(rt); got != base {
		t.Fatalf("finalizers left %d sessions unfreed", got-base)
	}
}

func chatFixtures() string {
	return filepath.Join(filepath.Dir(tinyDir()), "chat")
}

// hfChatRender is HF transformers' apply_chat_template(tokenize=False) text for a fixture
// conversation (tests/fixtures/chat/expected/hf_renders.json).
func hfChatRender(t *testing.T, template, conversation string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chatFixtures(), "expected", "hf_renders.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Renders map[string]map[string]struct {
			Text string `json:"text"`
		} `json:"renders"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	render, ok := file.Renders[template][conversation]
	if !ok {
		t.Fatalf("no render %s/%s in hf_renders.json", template, conversation)
	}
	return render.Text
}

func qwen3Template(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chatFixtures(), "templates", "qwen3.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestChatRenderMatchesTransformers(t *testing.T) {
	_, m := fixture(t)
	messages := []ChatMessage{Message("system", "You are a terse assistant."), Message("user", "What is 2+2?")}
	text, err := m.ChatRender(messages, &ChatOptions{TemplateOverride: qwen3Template(t)})
	if err != nil {
		t.Fatal(err)
	}
	if want := hfChatRender(t, "qwen3", "system_user_gen"); text != want {
		t.Fatalf("ChatRender = %q, HF rendered %q", text, want)
	}
}

func TestChatRenderTokensMasksTheAssistantReply(t *testing.T) {
	_, m := fixture(t)
	messages := []ChatMessage{Message("user", "Hi"), Message("assistant", "Hello there")}
	ids, mask, err := m.ChatRenderTokens(messages, &ChatOptions{NoGenerationPrompt: true, TemplateOverride: qwen3Template(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(mask) || len(ids) == 0 {
		t.Fatalf("%d ids but %d mask entries", len(ids), len(mask))
	}
	var masked []int32
	for i, id := range ids {
		if mask[i] == 1 {
			masked = append(masked, id)
		}
	}
	if len(masked) == 0 {
		t.Fatal("no token is masked as assistant content")
	}
	if text, err := m.Detokenize(masked, false); err != nil || text != "<think>\n\n</think>\n\nHello there<|im_end|>" {
		t.Fatalf("masked tokens detokenize to %q (%v), want the assistant's content", text, err)
	}
}

func TestQuantizeWritesAGgufThatReloads(t *testing.T) {
	ref := loadReference(t)
	rt, _ := fixture(t)
	dst := filepath.Join(t.TempDir(), "tiny.gguf")
	stages := map[string]bool{}
	err := rt.Quantize(tinyDir(), dst, QuantizeQ8_0, 1, func(f float32, stage string) bool {
		stages[stage] = true
		return false
	})
	if err != nil || !stages["writing"] {
		t.Fatalf("quantize: %v, stages %v", err, stages)
	}
	m, err := rt.LoadModel(dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids, err := m.Tokenize(ref.PromptText, false, false)
	if err != nil || len(ids) < len(ref.TokenIDs) || ids[0] != ref.TokenIDs[0] {
		t.Errorf("tokenize: %v %v", ids, err)
	}
	if err := rt.Quantize(filepath.Join(t.TempDir(), "missing"), dst, QuantizeF16, 0, nil); !errors.Is(err, &Error{Status: StatusNotFound}) {
		t.Errorf("missing source: %v", err)
	}
}

func TestTrainTokenizerSaveAndReload(t *testing.T) {
	dir := t.TempDir()
	corpus := filepath.Join(dir, "corpus.txt")
	if err := os.WriteFile(corpus, []byte(strings.Repeat("low lower lowest newer newest wider widest\n", 50)), 0o644); err != nil {
		t.Fatal(err)
	}
	var stages []string
	tok, err := TrainTokenizer([]string{corpus}, TrainOptions{
		VocabSize:     300,
		SpecialTokens: []string{"<|end|>"},
		Progress:      func(f float32, stage string) bool { stages = append(stages, stage); return false },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if len(stages) == 0 || stages[len(stages)-1] != "done" {
		t.Errorf("progress stages %v", stages)
	}
	text := "lowest wider 🙂 新"
	ids, err := tok.Encode(text, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if back, _ := tok.Decode(ids, false); back != text {
		t.Errorf("round trip: %q", back)
	}
	// "low", " lowest" and " wider" are training words seen 50 times: one token each.
	if words, _ := tok.Encode("low lowest wider", false, false); len(words) != 3 {
		t.Errorf("training words: %v", words)
	}
	size, _ := tok.VocabSize()
	if special, _ := tok.Encode("<|end|>", false, true); !reflect.DeepEqual(special, []int32{size - 1}) {
		t.Errorf("special token ids %v, vocab size %d", special, size)
	}
	if err := tok.Save(filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	again, err := LoadTokenizer(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if reloaded, _ := again.Encode(text, false, false); !reflect.DeepEqual(reloaded, ids) {
		t.Errorf("reloaded ids %v, trained %v", reloaded, ids)
	}
	var kerr *Error
	_, err = TrainTokenizer([]string{corpus}, TrainOptions{VocabSize: 300, Progress: func(float32, string) bool { return true }})
	if !errors.As(err, &kerr) || kerr.Status != StatusCancelled {
		t.Errorf("cancel: %v", err)
	}
	if err := again.Save(filepath.Join(dir, "copy")); !errors.As(err, &kerr) || kerr.Status != StatusUnsupported {
		t.Errorf("saving a loaded tokenizer: %v", err)
	}
}
