package kiln

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"

	"kiln.dev/kiln/raw"
)

// MaxMTPHeads is the most extra future-token heads a trainer may have.
const MaxMTPHeads = raw.KILN_MAX_MTP_HEADS

// CreateModelOptions configures CreateModel.
type CreateModelOptions struct {
	Seed          *uint64 // initialisation seed; nil = kiln's default (1337)
	TokenizerPath string  // a tokenizer.json or a directory holding one; "" = no tokenizer (ids only)
}

// CreateModel makes a fresh model for training from a Hugging Face style config.json text, its
// weights initialised from the seed the way the family's reference code does it.
func CreateModel(r *Runtime, configJSON string, opts CreateModelOptions) (*Model, error) {
	rptr, err := r.handle()
	if err != nil {
		return nil, err
	}
	copts := raw.NewKiln_model_create_options()
	defer raw.DeleteKiln_model_create_options(copts)
	if err := call(func() status { return raw.Kiln_model_create_options_default(copts) }); err != nil {
		return nil, err
	}
	if opts.Seed != nil {
		copts.SetSeed(*opts.Seed)
	}
	if opts.TokenizerPath != "" {
		copts.SetTokenizer_path(opts.TokenizerPath) // the options own a copy (kiln_train.i)
	}
	var p uintptr
	if err := call(func() status { return raw.Kiln_model_create(rptr, configJSON, copts, &p) }); err != nil {
		return nil, err
	}
	m := &Model{rt: r, ptr: cModel(p)}
	return adoptModel(m), nil
}

// Optimizer selects the update rule.
type Optimizer int

var (
	OptimizerAdamW Optimizer = Optimizer(raw.KILN_OPTIMIZER_ADAMW)
	// OptimizerMuon is nanochat's recipe: Muon on block matrices, AdamW on the rest.
	OptimizerMuon Optimizer = Optimizer(raw.KILN_OPTIMIZER_MUON)
)

// LRSchedule shapes the learning rate over the steps.
type LRSchedule int

var (
	LRConstant          LRSchedule = LRSchedule(raw.KILN_LR_CONSTANT)
	LRWarmupCosine      LRSchedule = LRSchedule(raw.KILN_LR_WARMUP_COSINE)
	LRWarmupLinear      LRSchedule = LRSchedule(raw.KILN_LR_WARMUP_LINEAR)
	LRWarmupStableDecay LRSchedule = LRSchedule(raw.KILN_LR_WARMUP_STABLE_DECAY)
)

// ParamRole is a kind of trainable tensor (kiln.h's kiln_param_role).
type ParamRole int

var (
	ParamMatrix    ParamRole = ParamRole(raw.KILN_PARAM_MATRIX)    // 2-D weights inside blocks (attention, MLP)
	ParamEmbedding ParamRole = ParamRole(raw.KILN_PARAM_EMBEDDING) // the token embedding (also the head when tied)
	ParamPosition  ParamRole = ParamRole(raw.KILN_PARAM_POSITION)  // learned positions (GPT-2)
	ParamHead      ParamRole = ParamRole(raw.KILN_PARAM_HEAD)      // an untied lm_head
	ParamNorm      ParamRole = ParamRole(raw.KILN_PARAM_NORM)      // norm weights
	ParamBias      ParamRole = ParamRole(raw.KILN_PARAM_BIAS)      // biases
)

// ParamGroup gives the AdamW-updated tensors of Role their own learning rate (nil = the trainer's
// LearningRate; 0 freezes them) and/or weight decay (nil = the role's default), as torch's
// parameter groups. A later group for the same role replaces an earlier one; in Muon mode the
// matrices follow the Muon options instead.
type ParamGroup struct {
	Role         ParamRole
	LearningRate *float32
	WeightDecay  *float32
}

// TrainerOptions configures NewTrainer. Start from DefaultTrainerOptions(): a zero field means zero
// (a learning rate of 0, no clipping), not kiln's default.
type TrainerOptions struct {
	Optimizer        Optimizer
	LearningRate     float32 // peak LR of AdamW-updated tensors
	Beta1, Beta2     float32
	Epsilon          float32
	WeightDecay      float32
	MuonLearningRate float32
	MuonMomentum     float32
	MuonNSSteps      int32
	ParamGroups      []ParamGroup
	Schedule         LRSchedule
	WarmupSteps      int64
	TotalSteps       int64
	MinLRRatio       float32
	DecayFraction    float32
	GradAccumSteps   int32 // micro-batches per step; must divide the batch's rows
	MaxGradNorm      float32
	Seed             uint64
	NMTPHeads        int32
	MTPLossWeights   [MaxMTPHeads]float32
	ResidualDropout  float32 // GPT-2-style residual dropout in [0, 1), train steps only; 0 = off
	// Progress, when not nil, is called during every step: stage "forward" before each
	// micro-batch's forward + backward pass (fraction = the share of micro-batches done), then
	// "optimizer" before the update (fraction 1); returning true cancels the step. A panic in it cancels the step and is
	// returned by Step.
	Progress func(fraction float32, stage string) bool
}

// DefaultTrainerOptions is kiln_trainer_options_default.
func DefaultTrainerOptions() TrainerOptions {
	o := raw.NewKiln_trainer_options()
	defer raw.DeleteKiln_trainer_options(o)
	raw.Kiln_trainer_options_default(o)
	t := TrainerOptions{Optimizer: Optimizer(o.GetOptimizer()), LearningRate: o.GetLearning_rate(),
		Beta1: o.GetBeta1(), Beta2: o.GetBeta2(), Epsilon: o.GetEpsilon(),
		WeightDecay: o.GetWeight_decay(), MuonLearningRate: o.GetMuon_learning_rate(),
		MuonMomentum: o.GetMuon_momentum(), MuonNSSteps: int32(o.GetMuon_ns_steps()),
		Schedule: LRSchedule(o.GetSchedule()), WarmupSteps: o.GetWarmup_steps(),
		TotalSteps: o.GetTotal_steps(), MinLRRatio: o.GetMin_lr_ratio(),
		DecayFraction: o.GetDecay_fraction(), GradAccumSteps: int32(o.GetGrad_accum_steps()),
		MaxGradNorm: o.GetMax_grad_norm(), Seed: o.GetSeed(), NMTPHeads: int32(o.GetN_mtp_heads()),
		ResidualDropout: o.GetResidual_dropout()}
	for k := range t.MTPLossWeights {
		t.MTPLossWeights[k] = raw.Kiln_bind_trainer_options_mtp_loss_weight(o, k)
	}
	return t
}

// cTrainerOptions is the C memory one NewTrainer call lends kiln (kiln copies it at creation).
type cTrainerOptions struct {
	options raw.Kiln_trainer_options
}

// checkParamGroups rejects a negative or NaN LearningRate/WeightDecay: kiln reads those as "not
// set", which here is nil, so one given is a mistake rather than a silent fallback.
func checkParamGroups(groups []ParamGroup) error {
	for i, g := range groups {
		for _, f := range []struct {
			name  string
			value *float32
		}{{"LearningRate", g.LearningRate}, {"WeightDecay", g.WeightDecay}} {
			if f.value != nil && !(*f.value >= 0) {
				return &Error{Status: StatusInvalidArgument,
					Message: fmt.Sprintf("kiln.TrainerOptions.ParamGroups[%d].%s is %g; expected >= 0 or nil", i, f.name, *f.value)}
			}
		}
	}
	return nil
}

func newCTrainerOptions(t TrainerOptions) *cTrainerOptions {
	c := &cTrainerOptions{options: raw.NewKiln_trainer_options()}
	o := c.options
	raw.Kiln_trainer_options_default(o)
	o.SetOptimizer(raw.Enum_SS_kiln_optimizer(t.Optimizer))
	o.SetLearning_rate(t.LearningRate)
	o.SetBeta1(t.Beta1)
	o.SetBeta2(t.Beta2)
	o.SetEpsilon(t.Epsilon)
	o.SetWeight_decay(t.WeightDecay)
	o.SetMuon_learning_rate(t.MuonLearningRate)
	o.SetMuon_momentum(t.MuonMomentum)
	o.SetMuon_ns_steps(int(t.MuonNSSteps))
	o.SetSchedule(raw.Enum_SS_kiln_lr_schedule(t.Schedule))
	o.SetWarmup_steps(t.WarmupSteps)
	o.SetTotal_steps(t.TotalSteps)
	o.SetMin_lr_ratio(t.MinLRRatio)
	o.SetDecay_fraction(t.DecayFraction)
	o.SetGrad_accum_steps(int(t.GradAccumSteps))
	o.SetMax_grad_norm(t.MaxGradNorm)
	o.SetSeed(t.Seed)
	o.SetN_mtp_heads(int(t.NMTPHeads))
	o.SetResidual_dropout(t.ResidualDropout)
	for k, w := range t.MTPLossWeights {
		raw.Kiln_bind_trainer_options_set_mtp_loss_weight(o, k, w)
	}
	for _, g := range t.ParamGroups {
		learningRate, weightDecay := float32(-1), float32(-1) // kiln reads a negative value as "not set"
		if g.LearningRate != nil {
			learningRate = *g.LearningRate
		}
		if g.WeightDecay != nil {
			weightDecay = *g.WeightDecay
		}
		raw.Kiln_bind_trainer_options_add_param_group(o, int(g.Role), learningRate, weightDecay)
	}
	return c
}

func (c *cTrainerOptions) free() {
	raw.Kiln_bind_trainer_options_free_param_groups(c.options)
	raw.DeleteKiln_trainer_options(c.options)
}

// Batch is B rows × T positions (kiln.h, "Training"): Inputs and Targets hold B*T ids (a target of
// -1 is not counted); LossMask (0 = not counted) and LossWeights (>= 0) are optional, B*T each.
// Step and EvalLoss read the slices in place.
type Batch struct {
	BatchSize, SeqLen int
	Inputs, Targets   []int32
	LossMask          []uint8
	LossWeights       []float32
}

// check makes sure kiln never reads past a slice: every given array holds exactly B*T items.
func (b *Batch) check() error {
	n := 0
	if b.BatchSize > 0 && b.SeqLen > 0 {
		n = b.BatchSize * b.SeqLen
	}
	lens := []struct {
		name string
		got  int
		opt  bool
	}{{"Inputs", len(b.Inputs), false}, {"Targets", len(b.Targets), false},
		{"LossMask", len(b.LossMask), true}, {"LossWeights", len(b.LossWeights), true}}
	for _, l := range lens {
		if (l.got != 0 || !l.opt) && l.got != n {
			return &Error{Status: StatusInvalidArgument,
				Message: fmt.Sprintf("kiln.Batch.%s holds %d items but BatchSize*SeqLen is %d*%d = %d", l.name, l.got, b.BatchSize, b.SeqLen, n)}
		}
	}
	return nil
}

// TrainResult is what a step (or an evaluation) measured.
type TrainResult struct {
	Loss            float64   // the main (next-token) head's loss
	Objective       float64   // Loss + Σ MTP weight · head loss: what was minimised
	MTPLosses       []float64 // one per MTP head
	NTokens         int64     // counted positions of the main head
	WeightSum       float64
	GradNorm        float64 // before clipping; 0 for an evaluation
	LearningRate    float64
	TokensPerSecond float64
	Step            int64 // optimizer steps taken so far, this one included
}

// TrainerInfo describes a trainer.
type TrainerInfo struct {
	Step         int64
	NParameters  int64
	NMTPHeads    int32
	Architecture string
}

// TrainerOutput selects what Forward returns.
type TrainerOutput int

var (
	// OutputLogits is [1+NMTPHeads][B][T][vocab] float32, the main head first.
	OutputLogits TrainerOutput = TrainerOutput(raw.KILN_TRAINER_OUTPUT_LOGITS)
	// OutputHidden is [B][T][hidden]: the trunk's output.
	OutputHidden TrainerOutput = TrainerOutput(raw.KILN_TRAINER_OUTPUT_HIDDEN)
)

// Trainer trains a model on its own float32 copy of the weights (the model may be closed after
// NewTrainer). One goroutine at a time (kiln reports a second one with StatusBusy); Cancel is safe
// from any goroutine. Close it before its Runtime.
type Trainer struct {
	mu       sync.RWMutex // guards ptr against Close; kiln itself detects concurrent use
	ptr      cTrainer
	rt       *Runtime
	nMTP     int
	progress cgo.Handle     // the progress callback, held while kiln may call it; 0 = none
	state    *progressState // what that callback recorded (a panic), nil when none

	// Cancellation bookkeeping (see run): a request kiln receives when no step runs applies to the
	// next step, so a context cancelled just as its step ends could cancel the following one.
	cancelMu  sync.Mutex
	running   bool // a Step/EvalLoss with a cancellable context is inside kiln
	stale     bool // such a context's cancel reached kiln after its step had finished
	explicit  bool // Cancel() was called since the last cancelled step
	userAsked bool // the progress callback asked to stop during the current step
}

// adopt finishes a Trainer whose ptr kiln just made.
func (t *Trainer) adopt() (*Trainer, error) {
	t.rt.adopt(1)
	runtime.SetFinalizer(t, func(t *Trainer) { _ = t.Close() })
	info, err := t.Info()
	if err != nil {
		_ = t.Close()
		return nil, err
	}
	t.nMTP = int(info.NMTPHeads)
	return t, nil
}

// progressState wraps fn for kiln's progress trampoline, noting on t when it asks to stop.
func (t *Trainer) progressState(fn func(float32, string) bool) *progressState {
	return &progressState{fn: func(f float32, stage string) bool {
		stop := fn(f, stage)
		if stop {
			t.cancelMu.Lock()
			t.userAsked = true
			t.cancelMu.Unlock()
		}
		return stop
	}}
}

// NewTrainer creates a trainer over a float32 copy of the model's weights.
func NewTrainer(m *Model, opts TrainerOptions) (*Trainer, error) {
	if err := checkParamGroups(opts.ParamGroups); err != nil {
		return nil, err
	}
	c := newCTrainerOptions(opts)
	defer c.free()
	t := &Trainer{rt: m.rt}
	if opts.Progress != nil {
		t.state = t.progressState(opts.Progress)
		t.progress = t.state.handle()
		raw.Kiln_go_trainer_options_set_progress_callback(c.options, uint(t.progress))
	}
	err := m.with(func(p cModel) error {
		var ptr uintptr
		err := call(func() status { return raw.Kiln_trainer_create(p, c.options, &ptr) })
		t.ptr = cTrainer(ptr)
		return err
	})
	if err != nil {
		if t.progress != 0 {
			t.progress.Delete()
		}
		return nil, err
	}
	return t.adopt()
}

// LoadCheckpoint recreates a trainer from a checkpoint written by Save, ready to continue exactly
// where it was (the progress callback is not saved: use SetProgress).
func LoadCheckpoint(r *Runtime, path string) (*Trainer, error) {
	rptr, err := r.handle()
	if err != nil {
		return nil, err
	}
	var ptr uintptr
	if err := call(func() status { return raw.Kiln_checkpoint_load(rptr, path, &ptr) }); err != nil {
		return nil, err
	}
	return (&Trainer{rt: r, ptr: cTrainer(ptr)}).adopt()
}

// Close frees the trainer. Idempotent.
func (t *Trainer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != 0 {
		raw.Kiln_trainer_free(t.ptr)
		t.ptr = 0
		t.rt.adopt(-1)
		runtime.SetFinalizer(t, nil)
		if t.progress != 0 {
			t.progress.Delete()
			t.progress = 0
		}
	}
	return nil
}

func (t *Trainer) with(f func(p cTrainer) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == 0 {
		return closedError("Trainer")
	}
	return f(t.ptr)
}

// Info describes the trainer (Step is the optimizer steps taken).
func (t *Trainer) Info() (TrainerInfo, error) {
	var out TrainerInfo
	err := t.with(func(p cTrainer) error {
		i := raw.NewKiln_trainer_info()
		defer raw.DeleteKiln_trainer_info(i)
		if err := call(func() status { return raw.Kiln_trainer_get_info(p, i) }); err != nil {
			return err
		}
		out = TrainerInfo{i.GetStep(), i.GetN_parameters(), int32(i.GetN_mtp_heads()), i.GetArchitecture()}
		return nil
	})
	return out, err
}

// Step runs one optimizer step on b. Cancelling ctx stops the step inside kiln (through
// kiln_trainer_cancel) and returns ctx.Err(); a progress callback returning true returns an error
// with StatusCancelled. On any error the weights and optimizer state are unchanged.
func (t *Trainer) Step(ctx context.Context, b Batch) (TrainResult, error) {
	return t.run(ctx, b, false)
}

// EvalLoss is the loss on b without updating anything (GradNorm 0, Step unchanged).
func (t *Trainer) EvalLoss(ctx context.Context, b Batch) (TrainResult, error) {
	return t.run(ctx, b, true)
}

// watch calls kiln_trainer_cancel when ctx is done while the step runs; the returned function ends
// the watch and says whether it cancelled.
func (t *Trainer) watch(ctx context.Context, p cTrainer) func() bool {
	t.cancelMu.Lock()
	t.running, t.userAsked = true, false
	t.cancelMu.Unlock()
	if ctx.Done() == nil {
		return func() bool {
			t.cancelMu.Lock()
			t.running = false
			t.cancelMu.Unlock()
			return false
		}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	fired := false
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			t.cancelMu.Lock()
			if t.running {
				raw.Kiln_trainer_cancel(p)
				fired = true
			}
			t.cancelMu.Unlock()
		case <-done:
		}
	}()
	return func() bool {
		t.cancelMu.Lock()
		t.running = false
		t.cancelMu.Unlock()
		close(done)
		<-exited
		return fired
	}
}

func (t *Trainer) run(ctx context.Context, b Batch, evaluate bool) (TrainResult, error) {
	if err := b.check(); err != nil {
		return TrainResult{}, err
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return TrainResult{}, err
		}
		result := raw.NewKiln_train_result()
		var st status
		var message string
		var fired bool
		var callbackErr error
		err := t.with(func(p cTrainer) error {
			stop := t.watch(ctx, p)
			runtime.LockOSThread() // kiln_last_error() is thread-local
			if evaluate {
				st = raw.Kiln_eval_loss(p, b.BatchSize, b.SeqLen, b.Inputs, b.Targets, b.LossMask, b.LossWeights, result)
			} else {
				st = raw.Kiln_train_step(p, b.BatchSize, b.SeqLen, b.Inputs, b.Targets, b.LossMask, b.LossWeights, result)
			}
			if st != raw.KILN_OK {
				message = raw.Kiln_last_error()
			}
			runtime.UnlockOSThread()
			fired = stop()
			if state := t.progressValue(); state != nil && state.err != nil {
				callbackErr, state.err = state.err, nil
			}
			return nil
		})
		out := t.result(result)
		raw.DeleteKiln_train_result(result)
		if err != nil { // closed
			return TrainResult{}, err
		}
		if t.retryAfterStaleCancel(ctx, st == raw.KILN_ERR_CANCELLED, fired, callbackErr, attempt) {
			continue
		}
		switch {
		case callbackErr != nil:
			return TrainResult{}, callbackErr
		case st == raw.KILN_ERR_CANCELLED && ctx.Err() != nil:
			return TrainResult{}, ctx.Err()
		case st != raw.KILN_OK:
			return TrainResult{}, &Error{Status: int(st), Message: message}
		}
		return out, nil
	}
}

// retryAfterStaleCancel applies kiln.h's cancellation rule: a cancel request that reaches kiln when
// no step runs is kept for the next step. So a context cancelled just as its step ended may
// cancel the following step. Such a step (cancelled, but not by its own context, its progress
// callback or Cancel) is run once more: a cancelled step changed nothing.
func (t *Trainer) retryAfterStaleCancel(ctx context.Context, cancelled, fired bool,
	callbackErr error, attempt int) bool {
	t.cancelMu.Lock()
	defer t.cancelMu.Unlock()
	if !cancelled {
		if fired {
			t.stale = true // this step ended before kiln saw the request: it is still pending
		}
		return false
	}
	onlyStale := t.stale && !fired && !t.explicit && !t.userAsked && callbackErr == nil && ctx.Err() == nil
	t.stale, t.explicit = false, false // kiln consumed the pending request
	return onlyStale && attempt == 0
}

// progressValue is called inside t.with (t.mu read-locked already).
func (t *Trainer) progressValue() *progressState { return t.state }

func (t *Trainer) result(r raw.Kiln_train_result) TrainResult {
	mtp := make([]float64, t.nMTP)
	for k := range mtp {
		mtp[k] = raw.Kiln_bind_train_result_mtp_loss(r, k)
	}
	return TrainResult{Loss: r.GetLoss(), Objective: r.GetObjective(), MTPLosses: mtp,
		NTokens: r.GetN_tokens(), WeightSum: r.GetWeight_sum(), GradNorm: r.GetGrad_norm(),
		LearningRate: r.GetLearning_rate(), TokensPerSecond: r.GetTokens_per_second(),
		Step: r.GetStep()}
}

// Cancel stops the running step (it returns StatusCancelled, nothing changed); safe from any
// goroutine. When no step runs, the next one is cancelled.
func (t *Trainer) Cancel() error {
	return t.with(func(p cTrainer) error {
		t.cancelMu.Lock()
		t.explicit = true
		t.cancelMu.Unlock()
		return call(func() status { return raw.Kiln_trainer_cancel(p) })
	})
}

// SetProgress replaces the step progress callback (nil removes it); see TrainerOptions.Progress.
func (t *Trainer) SetProgress(fn func(fraction float32, stage string) bool) error {
	var h cgo.Handle
	var state *progressState
	if fn != nil {
		state = t.progressState(fn)
		h = state.handle()
	}
	err := t.with(func(p cTrainer) error {
		return call(func() status { return raw.Kiln_trainer_set_progress(p, uintptr(h)) })
	})
	if err != nil {
		if h != 0 {
			h.Delete()
		}
		return err
	}
	t.mu.Lock()
	old := t.progress
	t.progress, t.state = h, state
	t.mu.Unlock()
	if old != 0 {
		old.Delete() // kiln no longer holds it
	}
	return nil
}

// Forward runs the current weights on inputs (batchSize*seqLen ids) and returns OutputLogits
// ([1+NMTPHeads][B][T][vocab], row-major) or OutputHidden ([B][T][hidden]) as float32.
func (t *Trainer) Forward(inputs []int32, batchSize, seqLen int, what TrainerOutput) ([]float32, error) {
	if err := (&Batch{BatchSize: batchSize, SeqLen: seqLen, Inputs: inputs, Targets: inputs}).check(); err != nil {
		return nil, err
	}
	var out []float32
	err := t.with(func(p cTrainer) error {
		var needed uint64
		w := raw.Enum_SS_kiln_trainer_output(what)
		return call(func() status {
			st := raw.Kiln_trainer_forward(p, inputs, batchSize, seqLen, w, nil, &needed)
			if st != raw.KILN_ERR_BUFFER_TOO_SMALL {
				return st
			}
			out = make([]float32, int(needed))
			return raw.Kiln_trainer_forward(p, inputs, batchSize, seqLen, w, out, &needed)
		})
	})
	return out, err
}

// Snapshot hands out the current weights as a new Model for generation (MTP heads excluded).
func (t *Trainer) Snapshot() (*Model, error) {
	m := &Model{rt: t.rt}
	err := t.with(func(p cTrainer) error {
		var ptr uintptr
		err := call(func() status { return raw.Kiln_trainer_snapshot(p, &ptr) })
		m.ptr = cModel(ptr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return adoptModel(m), nil
}

// DataState is the opaque bytes saved with checkpoints for the caller's data loader.
func (t *Trainer) DataState() ([]byte, error) {
	var out []byte
	err := t.with(func(p cTrainer) error {
		state, err := fill(func(buf []byte, size *uint64) status {
			return raw.Kiln_trainer_get_data_state(p, buf, size)
		})
		out = append([]byte{}, state...)
		return err
	})
	return out, err
}

// SetDataState replaces the data state (copied; at most 1 MiB).
func (t *Trainer) SetDataState(state []byte) error {
	return t.with(func(p cTrainer) error {
		return call(func() status { return raw.Kiln_trainer_set_data_state(p, state) })
	})
}

// Save writes a checkpoint atomically (a crash leaves the previous file intact).
func (t *Trainer) Save(path string) error {
	return t.with(func(p cTrainer) error {
		return call(func() status { return raw.Kiln_checkpoint_save(p, path) })
	})
}

// ExportHF writes the current weights as a Hugging Face model directory that transformers (and
// Runtime.LoadModel) load.
func (t *Trainer) ExportHF(directory string) error {
	return t.with(func(p cTrainer) error {
		return call(func() status { return raw.Kiln_trainer_export_hf(p, directory) })
	})
}
