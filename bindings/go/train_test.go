package kiln

// Tests of the training API. The Test*Errors/Defaults/Checked tests run against any libkiln; the
// others need the training engine: they train a fresh tiny Llama (hidden 32, 2 layers, 4 heads,
// the vocabulary of models/kjv-tiny's tokenizer) on fixed text, against references independent of
// kiln (ln(vocab) for a fresh model's loss, the Llama parameter count from the config, and kiln's
// inference path for the trainer's forward pass).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const trainText = "In the beginning God created the heaven and the earth. And the earth was without form, " +
	"and void; and darkness was upon the face of the deep."

const trainB, trainT = 2, 8

func kjvTiny() string {
	src := os.Getenv("KILN_SOURCE_DIR")
	if src == "" {
		src = "../.."
	}
	return filepath.Join(src, "models", "kjv-tiny")
}

func tinyLlamaConfig(vocab int32) map[string]interface{} {
	return map[string]interface{}{"architectures": []string{"LlamaForCausalLM"}, "vocab_size": vocab,
		"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 4, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
		"rope_theta": 10000.0, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 0}
}

func configJSON(t *testing.T, cfg map[string]interface{}) string {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// trainFixture is a one-thread CPU runtime, the kjv-tiny tokenizer and a fixed batch cut from
// trainText (targets = inputs shifted by one).
type trainFixture struct {
	rt     *Runtime
	vocab  int32
	ids    []int32
	config string
	batch  Batch
}

func newTrainFixture(t *testing.T) *trainFixture {
	t.Helper()
	rt, err := NewRuntime(RuntimeOptions{Backend: BackendCPU, NThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := LoadTokenizer(kjvTiny())
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	vocab, err := tok.VocabSize()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Encode(trainText, false, false)
	if err != nil || len(ids) <= trainB*trainT {
		t.Fatalf("encode: %d ids, %v", len(ids), err)
	}
	f := &trainFixture{rt: rt, vocab: vocab, ids: ids, config: configJSON(t, tinyLlamaConfig(vocab))}
	f.batch = Batch{BatchSize: trainB, SeqLen: trainT, Inputs: ids[:trainB*trainT], Targets: ids[1 : trainB*trainT+1]}
	t.Cleanup(func() { _ = rt.Close() })
	return f
}

func (f *trainFixture) model(t *testing.T) *Model {
	t.Helper()
	seed := uint64(7)
	m, err := CreateModel(f.rt, f.config, CreateModelOptions{Seed: &seed, TokenizerPath: kjvTiny()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func (f *trainFixture) trainer(t *testing.T, edit func(*TrainerOptions)) *Trainer {
	t.Helper()
	opts := DefaultTrainerOptions()
	opts.LearningRate = 3e-3
	if edit != nil {
		edit(&opts)
	}
	tr, err := NewTrainer(f.model(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func mustStep(t *testing.T, tr *Trainer, b Batch) TrainResult {
	t.Helper()
	r, err := tr.Step(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func stepCount(t *testing.T, tr *Trainer) int64 {
	t.Helper()
	info, err := tr.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.Step
}

func TestCreateModelErrors(t *testing.T) {
	f := newTrainFixture(t)
	_, err := CreateModel(f.rt, "{not json", CreateModelOptions{})
	if !errors.Is(err, &Error{Status: StatusFormat}) {
		t.Errorf("bad JSON: %v", err)
	}
	cfg := tinyLlamaConfig(f.vocab)
	cfg["architectures"] = []string{"BertForMaskedLM"}
	_, err = CreateModel(f.rt, configJSON(t, cfg), CreateModelOptions{})
	var ke *Error
	if !errors.As(err, &ke) || ke.Status != StatusUnsupported || !strings.Contains(ke.Message, "BertForMaskedLM") {
		t.Errorf("unsupported architecture: %v", err)
	}
	_, err = CreateModel(f.rt, f.config, CreateModelOptions{TokenizerPath: filepath.Join(kjvTiny(), "no-such-dir")})
	if !errors.As(err, &ke) || ke.Status != StatusNotFound || !strings.Contains(ke.Message, "no-such-dir") {
		t.Errorf("missing tokenizer: %v", err)
	}
}

func TestTrainerOptionDefaultsAreThoseOfKilnH(t *testing.T) {
	o := DefaultTrainerOptions()
	want := TrainerOptions{Optimizer: OptimizerAdamW, LearningRate: 3e-4, Beta1: 0.9, Beta2: 0.95,
		Epsilon: 1e-8, WeightDecay: 0.1, MuonLearningRate: 0.02, MuonMomentum: 0.95, MuonNSSteps: 5,
		Schedule: LRConstant, DecayFraction: 0.2, GradAccumSteps: 1, MaxGradNorm: 1, Seed: 1337}
	for k := range want.MTPLossWeights {
		want.MTPLossWeights[k] = 1
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults %+v, kiln.h documents %+v", o, want)
	}
}

func TestBatchesAreCheckedBeforeKilnReadsThem(t *testing.T) {
	b := Batch{BatchSize: 2, SeqLen: 3, Inputs: make([]int32, 6), Targets: make([]int32, 5)}
	var ke *Error
	if err := b.check(); !errors.As(err, &ke) || ke.Status != StatusInvalidArgument || !strings.Contains(ke.Message, "Targets holds 5") {
		t.Errorf("short targets: %v", err)
	}
	b.Targets = make([]int32, 6)
	b.LossMask = make([]uint8, 7)
	if err := b.check(); err == nil || !strings.Contains(err.Error(), "LossMask holds 7") {
		t.Errorf("long mask: %v", err)
	}
	b.LossMask = nil
	if err := b.check(); err != nil {
		t.Errorf("a well-formed batch: %v", err)
	}
}

func TestResidualDropoutReachesKiln(t *testing.T) {
	f := newTrainFixture(t)
	opts := DefaultTrainerOptions()
	opts.ResidualDropout = 1
	if _, err := NewTrainer(f.model(t), opts); err == nil || !strings.Contains(err.Error(), "residual_dropout") {
		t.Errorf("residual dropout 1: got %v, want an error naming residual_dropout", err)
	}
	f.trainer(t, func(o *TrainerOptions) { o.ResidualDropout = 0.2 })
}

func TestDataParallelReachesKiln(t *testing.T) {
	// A CPU runtime has no NCCL group ids and its trainer cannot join a group; a bad rank is named
	// first, and the trainer keeps working after the refusals.
	f := newTrainFixture(t)
	if _, err := f.rt.NcclID(); err == nil || !strings.Contains(err.Error(), "CUDA runtime") {
		t.Errorf("NcclID on a CPU runtime: got %v, want an error naming the CUDA runtime", err)
	}
	tr := f.trainer(t, nil)
	if err := tr.JoinDataParallel(2, 5, make([]byte, NcclIDBytes)); err == nil ||
		!strings.Contains(err.Error(), "world_size 2 and rank 5") {
		t.Errorf("rank 5 of 2: got %v", err)
	}
	if err := tr.JoinDataParallel(1, 0, make([]byte, NcclIDBytes)); err == nil ||
		!strings.Contains(err.Error(), "CUDA trainer") {
		t.Errorf("join on the CPU: got %v", err)
	}
	if err := tr.JoinDataParallel(1, 0, []byte{1, 2}); err == nil {
		t.Error("a 2-byte id was accepted")
	}
	// shardOptimizerState reaches kiln: with Muon it is refused by name, before the engine.
	muon := f.trainer(t, func(o *TrainerOptions) { o.Optimizer = OptimizerMuon })
	if err := muon.JoinDataParallelSharded(1, 0, make([]byte, NcclIDBytes), true); err == nil ||
		!strings.Contains(err.Error(), "Muon") {
		t.Errorf("sharded join with Muon: got %v", err)
	}
	if _, err := tr.Step(context.Background(), f.batch); err != nil {
		t.Errorf("the trainer no longer trains: %v", err)
	}
}

func TestNewTrainerOnAClosedModelFails(t *testing.T) {
	rt, m := fixture(t)
	_ = rt
	_ = m.Close()
	if _, err := NewTrainer(m, DefaultTrainerOptions()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("got %v", err)
	}
}

func TestAStaleContextCancelIsRetriedOnceAndOthersAreNot(t *testing.T) {
	tr := &Trainer{}
	ctx := context.Background()
	// Step 1 finished although its context's watcher called kiln_trainer_cancel: kiln keeps it.
	if tr.retryAfterStaleCancel(ctx, false, true, nil, 0) || !tr.stale {
		t.Fatal("a cancel that reached kiln after its step must be remembered as pending")
	}
	// Step 2 is cancelled by that request alone: run it again, once.
	if !tr.retryAfterStaleCancel(ctx, true, false, nil, 0) || tr.stale {
		t.Fatal("a step cancelled only by a stale request must be retried")
	}
	if tr.retryAfterStaleCancel(ctx, true, false, nil, 0) {
		t.Fatal("without a pending request a cancelled step is not retried")
	}
	// The step's own reasons win: Cancel(), its progress callback, its context, a second attempt.
	for name, setup := range map[string]func(){
		"Cancel":   func() { tr.explicit = true },
		"progress": func() { tr.userAsked = true },
	} {
		tr.stale, tr.explicit, tr.userAsked = true, false, false
		setup()
		if tr.retryAfterStaleCancel(ctx, true, false, nil, 0) {
			t.Errorf("%s: must not be retried", name)
		}
	}
	tr.stale, tr.userAsked = true, false
	done, cancel := context.WithCancel(ctx)
	cancel()
	if tr.retryAfterStaleCancel(done, true, true, nil, 0) {
		t.Error("a step cancelled by its own context must not be retried")
	}
	tr.stale = true
	if tr.retryAfterStaleCancel(ctx, true, false, nil, 1) {
		t.Error("only one retry")
	}
}

// llamaParameterCount is a tied-embedding Llama's parameter count, from the architecture.
func llamaParameterCount(vocab int64) int64 {
	const h, f, heads, kvHeads, layers = 32, 64, 4, 4, 2
	kv := int64(kvHeads * (h / heads))
	layer := 2*h*h + 2*h*kv + 3*h*f + 2*h
	return vocab*h + layers*layer + h
}

func TestFreshModelHasTheConfiguredShape(t *testing.T) {
	f := newTrainFixture(t)
	info, err := f.model(t).Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Architecture != "LlamaForCausalLM" || info.VocabSize != f.vocab || info.HiddenSize != 32 ||
		info.NLayers != 2 || info.NHeads != 4 || info.NParameters != llamaParameterCount(int64(f.vocab)) {
		t.Errorf("info %+v (want %d parameters)", info, llamaParameterCount(int64(f.vocab)))
	}
}

func TestLossDecreasesAndEvalLossChangesNothing(t *testing.T) {
	f := newTrainFixture(t)
	tr := f.trainer(t, nil)
	var losses []float64
	for i := 1; i <= 6; i++ {
		r := mustStep(t, tr, f.batch)
		if r.Step != int64(i) || r.NTokens != trainB*trainT || r.WeightSum != trainB*trainT || r.GradNorm <= 0 {
			t.Fatalf("step %d: %+v", i, r)
		}
		losses = append(losses, r.Loss)
	}
	if math.Abs(losses[0]-math.Log(float64(f.vocab))) > 0.3 || losses[5] > losses[0]-0.5 {
		t.Errorf("losses %v: want the first near ln(vocab) = %.3f and a drop", losses, math.Log(float64(f.vocab)))
	}
	a, err := tr.EvalLoss(context.Background(), f.batch)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tr.EvalLoss(context.Background(), f.batch)
	if a.Loss != b.Loss || a.Step != 6 || a.GradNorm != 0 || stepCount(t, tr) != 6 {
		t.Errorf("eval %+v then %+v, step %d", a, b, stepCount(t, tr))
	}
}

func TestCheckpointResumeIsExactAndDataStateRoundTrips(t *testing.T) {
	f := newTrainFixture(t)
	a := f.trainer(t, nil)
	if state, err := a.DataState(); err != nil || len(state) != 0 {
		t.Fatalf("fresh data state %q %v", state, err)
	}
	mustStep(t, a, f.batch)
	mustStep(t, a, f.batch)
	state := []byte("cursor=2\x00\xff")
	if err := a.SetDataState(state); err != nil {
		t.Fatal(err)
	}
	if got, err := a.DataState(); err != nil || string(got) != string(state) {
		t.Fatalf("data state %q %v", got, err)
	}
	if err := a.SetDataState(make([]byte, 1<<20+1)); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("oversized data state: %v", err)
	}
	path := filepath.Join(t.TempDir(), "run.ckpt")
	if err := a.Save(path); err != nil {
		t.Fatal(err)
	}
	uninterrupted := mustStep(t, a, f.batch)
	b, err := LoadCheckpoint(f.rt, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, _ := b.DataState(); string(got) != string(state) || stepCount(t, b) != 2 {
		t.Errorf("loaded data state %q, step %d", got, stepCount(t, b))
	}
	resumed := mustStep(t, b, f.batch)
	if resumed.Step != 3 || resumed.Loss != uninterrupted.Loss {
		t.Errorf("resumed %+v, uninterrupted %+v: must be bit-identical", resumed, uninterrupted)
	}
}

func TestAllZeroMaskIsInvalidArgument(t *testing.T) {
	f := newTrainFixture(t)
	tr := f.trainer(t, nil)
	b := f.batch
	b.LossMask = make([]uint8, trainB*trainT)
	_, err := tr.Step(context.Background(), b)
	var ke *Error
	if !errors.As(err, &ke) || ke.Status != StatusInvalidArgument || ke.Message == "" || stepCount(t, tr) != 0 {
		t.Errorf("all-zero mask: %v, step %d", err, stepCount(t, tr))
	}
}

func TestProgressCallbackAndContextCancelTheStep(t *testing.T) {
	f := newTrainFixture(t)
	// Two micro-batches: kiln.h promises "forward" before each one's forward + backward pass
	// (fraction = the share done) and "optimizer" before the update (fraction 1).
	var stages []string
	tr := f.trainer(t, func(o *TrainerOptions) {
		o.GradAccumSteps = 2
		o.Progress = func(fraction float32, stage string) bool {
			stages = append(stages, fmt.Sprintf("%s@%g", stage, fraction))
			return false
		}
	})
	mustStep(t, tr, f.batch)
	if got := strings.Join(stages, " "); got != "forward@0 forward@0.5 optimizer@1" {
		t.Errorf("stages %q", got)
	}
	before, err := tr.EvalLoss(context.Background(), f.batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.SetProgress(func(_ float32, stage string) bool { return stage == "optimizer" }); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(context.Background(), f.batch); !errors.Is(err, &Error{Status: StatusCancelled}) || stepCount(t, tr) != 1 {
		t.Errorf("progress cancel: %v, step %d", err, stepCount(t, tr))
	}
	_ = tr.SetProgress(func(float32, string) bool { panic("progress boom") })
	if _, err := tr.Step(context.Background(), f.batch); err == nil || !strings.Contains(err.Error(), "progress boom") {
		t.Errorf("panicking progress: %v", err)
	}

	// A context cancelled while the step runs: the watcher calls kiln_trainer_cancel.
	ctx, cancel := context.WithCancel(context.Background())
	_ = tr.SetProgress(func(_ float32, stage string) bool {
		if stage == "forward" {
			cancel()
			time.Sleep(200 * time.Millisecond) // lets the watcher reach kiln before the next check
		}
		return false
	})
	if _, err := tr.Step(ctx, f.batch); !errors.Is(err, context.Canceled) {
		t.Errorf("context cancel: %v", err)
	}
	if _, err := tr.Step(ctx, f.batch); !errors.Is(err, context.Canceled) { // done before it starts
		t.Errorf("cancelled context: %v", err)
	}
	_ = tr.SetProgress(nil)
	if after, err := tr.EvalLoss(context.Background(), f.batch); err != nil || after.Loss != before.Loss || stepCount(t, tr) != 1 {
		t.Errorf("cancelled steps changed the weights: %v -> %+v (%v), step %d", before.Loss, after, err, stepCount(t, tr))
	}
	if err := tr.Cancel(); err != nil { // no step runs: applies to the next one
		t.Fatal(err)
	}
	if _, err := tr.Step(context.Background(), f.batch); !errors.Is(err, &Error{Status: StatusCancelled}) {
		t.Errorf("Cancel before a step: %v", err)
	}
	if r := mustStep(t, tr, f.batch); r.Step != 2 {
		t.Errorf("step after the cancels: %+v", r)
	}
}

var allRoles = []ParamRole{ParamMatrix, ParamEmbedding, ParamPosition, ParamHead, ParamNorm, ParamBias}

func frozenGroups() []ParamGroup {
	zero := float32(0)
	groups := make([]ParamGroup, 0, len(allRoles))
	for _, r := range allRoles {
		groups = append(groups, ParamGroup{Role: r, LearningRate: &zero})
	}
	return groups
}

func TestParamGroupsFreezeAndTrainRoles(t *testing.T) {
	f := newTrainFixture(t)
	// A learning rate of 0 freezes a role (kiln.h): with every role frozen a step sees a gradient
	// but changes no weight, decay included.
	frozen := f.trainer(t, func(o *TrainerOptions) {
		o.ParamGroups = frozenGroups()
		o.WeightDecay = 0.5
	})
	before, err := frozen.EvalLoss(context.Background(), f.batch)
	if err != nil {
		t.Fatal(err)
	}
	if r := mustStep(t, frozen, f.batch); r.GradNorm <= 0 {
		t.Errorf("frozen step %+v", r)
	}
	if after, _ := frozen.EvalLoss(context.Background(), f.batch); after.Loss != before.Loss {
		t.Errorf("frozen weights moved: loss %v -> %v", before.Loss, after.Loss)
	}
	// Thawing the norms alone (a later group for a role replaces an earlier one) trains them.
	lr := float32(1e-2)
	norms := f.trainer(t, func(o *TrainerOptions) {
		o.ParamGroups = append(frozenGroups(), ParamGroup{Role: ParamNorm, LearningRate: &lr})
	})
	mustStep(t, norms, f.batch)
	if after, _ := norms.EvalLoss(context.Background(), f.batch); !(after.Loss < before.Loss) {
		t.Errorf("training the norms alone: loss %v -> %v", before.Loss, after.Loss)
	}
	// kiln reads a negative number as "not set"; here that is nil, so a negative value is an error.
	negative := float32(-0.1)
	opts := DefaultTrainerOptions()
	opts.ParamGroups = []ParamGroup{{Role: ParamBias, WeightDecay: &negative}}
	if _, err := NewTrainer(f.model(t), opts); !errors.Is(err, &Error{Status: StatusInvalidArgument}) ||
		!strings.Contains(err.Error(), "ParamGroups[0].WeightDecay is -0.1") {
		t.Errorf("negative weight decay: %v", err)
	}
}

func TestForwardSizesAndMTPLosses(t *testing.T) {
	f := newTrainFixture(t)
	tr := f.trainer(t, func(o *TrainerOptions) { o.NMTPHeads = 1 })
	logits, err := tr.Forward(f.batch.Inputs, trainB, trainT, OutputLogits)
	if err != nil || len(logits) != (1+1)*trainB*trainT*int(f.vocab) {
		t.Errorf("logits: %d floats, %v", len(logits), err)
	}
	hidden, err := tr.Forward(f.batch.Inputs, trainB, trainT, OutputHidden)
	if err != nil || len(hidden) != trainB*trainT*32 {
		t.Errorf("hidden: %d floats, %v", len(hidden), err)
	}
	if _, err := tr.Forward(f.batch.Inputs[:3], trainB, trainT, OutputLogits); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("short inputs: %v", err)
	}
	r := mustStep(t, tr, f.batch)
	if len(r.MTPLosses) != 1 || math.Abs(r.Objective-(r.Loss+r.MTPLosses[0])) > 1e-6*r.Objective {
		t.Errorf("result %+v", r)
	}
}

func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

func TestSnapshotAndExportRunTheTrainedWeights(t *testing.T) {
	f := newTrainFixture(t)
	tr := f.trainer(t, nil)
	for i := 0; i < 3; i++ {
		mustStep(t, tr, f.batch)
	}
	row := f.batch.Inputs[:trainT]
	want, err := tr.Forward(row, 1, trainT, OutputLogits)
	if err != nil {
		t.Fatal(err)
	}
	check := func(m *Model, what string) {
		s, err := m.NewSession(SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got, err := s.Forward(row, LogitsAll)
		if err != nil || len(got) != len(want) || relL2(got, want) > 1e-4 {
			t.Errorf("%s: %d logits, %v, rel L2 %g", what, len(got), err, relL2(got, want))
		}
	}
	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	check(snap, "snapshot")
	_ = snap.Close()
	dir := t.TempDir()
	if err := tr.ExportHF(dir); err != nil {
		t.Fatal(err)
	}
	exported, err := f.rt.LoadModel(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	check(exported, "exported")
	_ = exported.Close()
}
