package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_trainer_options_set_progress(kiln_trainer_options *options, uintptr_t handle);
kiln_status kiln_go_trainer_set_progress(kiln_trainer *trainer, uintptr_t handle);
kiln_status kiln_go_train(kiln_trainer *trainer, int evaluate, int32_t batch_size, int32_t seq_len,
                          const int32_t *inputs, const int32_t *targets, const uint8_t *loss_mask,
                          const float *loss_weights, kiln_train_result *result);
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// MaxMTPHeads is the most extra future-token heads a trainer may have.
const MaxMTPHeads = int(C.KILN_MAX_MTP_HEADS)

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
	copts := (*C.kiln_model_create_options)(C.calloc(1, C.sizeof_kiln_model_create_options))
	defer C.free(unsafe.Pointer(copts))
	if err := call(func() C.kiln_status {
		return C.kiln_model_create_options_default(copts, C.sizeof_kiln_model_create_options)
	}); err != nil {
		return nil, err
	}
	if opts.Seed != nil {
		copts.seed = C.uint64_t(*opts.Seed)
	}
	if opts.TokenizerPath != "" {
		copts.tokenizer_path = C.CString(opts.TokenizerPath)
		defer C.free(unsafe.Pointer(copts.tokenizer_path))
	}
	config := C.CBytes([]byte(configJSON))
	defer C.free(config)
	m := &Model{rt: r}
	if err := call(func() C.kiln_status {
		return C.kiln_model_create(rptr, (*C.char)(config), C.size_t(len(configJSON)), copts, &m.ptr)
	}); err != nil {
		return nil, err
	}
	return adoptModel(m), nil
}

func adoptModel(m *Model) *Model {
	m.rt.adopt(1)
	runtime.SetFinalizer(m, func(m *Model) { _ = m.Close() })
	return m
}

// Optimizer selects the update rule.
type Optimizer int

const (
	OptimizerAdamW Optimizer = Optimizer(C.KILN_OPTIMIZER_ADAMW)
	// OptimizerMuon is nanochat's recipe: Muon on block matrices, AdamW on the rest.
	OptimizerMuon Optimizer = Optimizer(C.KILN_OPTIMIZER_MUON)
)

// LRSchedule shapes the learning rate over the steps.
type LRSchedule int

const (
	LRConstant          LRSchedule = LRSchedule(C.KILN_LR_CONSTANT)
	LRWarmupCosine      LRSchedule = LRSchedule(C.KILN_LR_WARMUP_COSINE)
	LRWarmupLinear      LRSchedule = LRSchedule(C.KILN_LR_WARMUP_LINEAR)
	LRWarmupStableDecay LRSchedule = LRSchedule(C.KILN_LR_WARMUP_STABLE_DECAY)
)

// ParamRole is a kind of trainable tensor (kiln.h's kiln_param_role).
type ParamRole int

const (
	ParamMatrix    ParamRole = ParamRole(C.KILN_PARAM_MATRIX)    // 2-D weights inside blocks (attention, MLP)
	ParamEmbedding ParamRole = ParamRole(C.KILN_PARAM_EMBEDDING) // the token embedding (also the head when tied)
	ParamPosition  ParamRole = ParamRole(C.KILN_PARAM_POSITION)  // learned positions (GPT-2)
	ParamHead      ParamRole = ParamRole(C.KILN_PARAM_HEAD)      // an untied lm_head
	ParamNorm      ParamRole = ParamRole(C.KILN_PARAM_NORM)      // norm weights
	ParamBias      ParamRole = ParamRole(C.KILN_PARAM_BIAS)      // biases
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
	// Progress, when not nil, is called during every step: stage "forward" before each
	// micro-batch's forward + backward pass (fraction = the share of micro-batches done), then
	// "optimizer" before the update (fraction 1); returning true cancels the step. A panic in it cancels the step and is
	// returned by Step.
	Progress func(fraction float32, stage string) bool
}

// DefaultTrainerOptions is kiln_trainer_options_default.
func DefaultTrainerOptions() TrainerOptions {
	var o C.kiln_trainer_options
	C.kiln_trainer_options_default(&o, C.sizeof_kiln_trainer_options)
	t := TrainerOptions{Optimizer: Optimizer(o.optimizer), LearningRate: float32(o.learning_rate),
		Beta1: float32(o.beta1), Beta2: float32(o.beta2), Epsilon: float32(o.epsilon),
		WeightDecay: float32(o.weight_decay), MuonLearningRate: float32(o.muon_learning_rate),
		MuonMomentum: float32(o.muon_momentum), MuonNSSteps: int32(o.muon_ns_steps),
		Schedule: LRSchedule(o.schedule), WarmupSteps: int64(o.warmup_steps),
		TotalSteps: int64(o.total_steps), MinLRRatio: float32(o.min_lr_ratio),
		DecayFraction: float32(o.decay_fraction), GradAccumSteps: int32(o.grad_accum_steps),
		MaxGradNorm: float32(o.max_grad_norm), Seed: uint64(o.seed), NMTPHeads: int32(o.n_mtp_heads)}
	for k := range t.MTPLossWeights {
		t.MTPLossWeights[k] = float32(o.mtp_loss_weights[k])
	}
	return t
}

// cTrainerOptions is the C memory one NewTrainer call lends kiln (kiln copies it at creation).
type cTrainerOptions struct {
	options *C.kiln_trainer_options
	groups  *C.kiln_param_group
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
	c := &cTrainerOptions{options: (*C.kiln_trainer_options)(C.calloc(1, C.sizeof_kiln_trainer_options))}
	o := c.options
	C.kiln_trainer_options_default(o, C.sizeof_kiln_trainer_options)
	o.optimizer = C.kiln_optimizer(t.Optimizer)
	o.learning_rate = C.float(t.LearningRate)
	o.beta1, o.beta2, o.epsilon = C.float(t.Beta1), C.float(t.Beta2), C.float(t.Epsilon)
	o.weight_decay = C.float(t.WeightDecay)
	o.muon_learning_rate = C.float(t.MuonLearningRate)
	o.muon_momentum = C.float(t.MuonMomentum)
	o.muon_ns_steps = C.int32_t(t.MuonNSSteps)
	o.schedule = C.kiln_lr_schedule(t.Schedule)
	o.warmup_steps, o.total_steps = C.int64_t(t.WarmupSteps), C.int64_t(t.TotalSteps)
	o.min_lr_ratio, o.decay_fraction = C.float(t.MinLRRatio), C.float(t.DecayFraction)
	o.grad_accum_steps = C.int32_t(t.GradAccumSteps)
	o.max_grad_norm = C.float(t.MaxGradNorm)
	o.seed = C.uint64_t(t.Seed)
	o.n_mtp_heads = C.int32_t(t.NMTPHeads)
	for k, w := range t.MTPLossWeights {
		o.mtp_loss_weights[k] = C.float(w)
	}
	if n := len(t.ParamGroups); n > 0 {
		c.groups = (*C.kiln_param_group)(C.calloc(C.size_t(n), C.sizeof_kiln_param_group))
		groups := unsafe.Slice(c.groups, n)
		for i, g := range t.ParamGroups {
			groups[i].role = C.kiln_param_role(g.Role)
			groups[i].learning_rate = -1 // kiln reads a negative value as "not set"
			if g.LearningRate != nil {
				groups[i].learning_rate = C.float(*g.LearningRate)
			}
			groups[i].weight_decay = -1
			if g.WeightDecay != nil {
				groups[i].weight_decay = C.float(*g.WeightDecay)
			}
		}
		o.param_groups = c.groups
		o.n_param_groups = C.size_t(n)
	}
	return c
}

func (c *cTrainerOptions) free() {
	C.free(unsafe.Pointer(c.groups))
	C.free(unsafe.Pointer(c.options))
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

func ptrOf[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
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

const (
	// OutputLogits is [1+NMTPHeads][B][T][vocab] float32, the main head first.
	OutputLogits TrainerOutput = TrainerOutput(C.KILN_TRAINER_OUTPUT_LOGITS)
	// OutputHidden is [B][T][hidden]: the trunk's output.
	OutputHidden TrainerOutput = TrainerOutput(C.KILN_TRAINER_OUTPUT_HIDDEN)
)

// Trainer trains a model on its own float32 copy of the weights (the model may be closed after
// NewTrainer). One goroutine at a time (kiln reports a second one with StatusBusy); Cancel is safe
// from any goroutine. Close it before its Runtime.
type Trainer struct {
	mu       sync.RWMutex // guards ptr against Close; kiln itself detects concurrent use
	ptr      *C.kiln_trainer
	rt       *Runtime
	nMTP     int
	progress cgo.Handle // the progress callback's state, held while kiln may call it; 0 = none

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
		t.progress = cgo.NewHandle(t.progressState(opts.Progress))
		C.kiln_go_trainer_options_set_progress(c.options, C.uintptr_t(t.progress))
	}
	err := m.with(func(p *C.kiln_model) error {
		return call(func() C.kiln_status { return C.kiln_trainer_create(p, c.options, &t.ptr) })
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
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var ptr *C.kiln_trainer
	if err := call(func() C.kiln_status { return C.kiln_checkpoint_load(rptr, cpath, &ptr) }); err != nil {
		return nil, err
	}
	return (&Trainer{rt: r, ptr: ptr}).adopt()
}

// Close frees the trainer. Idempotent.
func (t *Trainer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != nil {
		C.kiln_trainer_free(t.ptr)
		t.ptr = nil
		t.rt.adopt(-1)
		runtime.SetFinalizer(t, nil)
		if t.progress != 0 {
			t.progress.Delete()
			t.progress = 0
		}
	}
	return nil
}

func (t *Trainer) with(f func(p *C.kiln_trainer) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return closedError("Trainer")
	}
	return f(t.ptr)
}

// Info describes the trainer (Step is the optimizer steps taken).
func (t *Trainer) Info() (TrainerInfo, error) {
	var out TrainerInfo
	err := t.with(func(p *C.kiln_trainer) error {
		var i C.kiln_trainer_info
		i.struct_size = C.sizeof_kiln_trainer_info
		if err := call(func() C.kiln_status { return C.kiln_trainer_get_info(p, &i) }); err != nil {
			return err
		}
		out = TrainerInfo{int64(i.step), int64(i.n_parameters), int32(i.n_mtp_heads), C.GoString(i.architecture)}
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
func (t *Trainer) watch(ctx context.Context, p *C.kiln_trainer) func() bool {
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
				C.kiln_trainer_cancel(p)
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
		var result C.kiln_train_result
		result.struct_size = C.sizeof_kiln_train_result
		var status C.kiln_status
		var message string
		var fired bool
		var callbackErr error
		err := t.with(func(p *C.kiln_trainer) error {
			stop := t.watch(ctx, p)
			runtime.LockOSThread() // kiln_last_error() is thread-local
			status = C.kiln_go_train(p, boolInt(evaluate), C.int32_t(b.BatchSize), C.int32_t(b.SeqLen),
				(*C.int32_t)(ptrOf(b.Inputs)), (*C.int32_t)(ptrOf(b.Targets)), (*C.uint8_t)(ptrOf(b.LossMask)),
				(*C.float)(ptrOf(b.LossWeights)), &result)
			if status != C.KILN_OK {
				message = C.GoString(C.kiln_last_error())
			}
			runtime.UnlockOSThread()
			fired = stop()
			if state := t.progressValue(); state != nil && state.err != nil {
				callbackErr, state.err = state.err, nil
			}
			return nil
		})
		runtime.KeepAlive(b)
		if err != nil { // closed
			return TrainResult{}, err
		}
		if t.retryAfterStaleCancel(ctx, status == C.KILN_ERR_CANCELLED, fired, callbackErr, attempt) {
			continue
		}
		switch {
		case callbackErr != nil:
			return TrainResult{}, callbackErr
		case status == C.KILN_ERR_CANCELLED && ctx.Err() != nil:
			return TrainResult{}, ctx.Err()
		case status != C.KILN_OK:
			return TrainResult{}, &Error{Status: int(status), Message: message}
		}
		return t.result(&result), nil
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

func (t *Trainer) progressValue() *progressState {
	if t.progress == 0 {
		return nil
	}
	return t.progress.Value().(*progressState)
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (t *Trainer) result(r *C.kiln_train_result) TrainResult {
	mtp := make([]float64, t.nMTP)
	for k := range mtp {
		mtp[k] = float64(r.mtp_losses[k])
	}
	return TrainResult{Loss: float64(r.loss), Objective: float64(r.objective), MTPLosses: mtp,
		NTokens: int64(r.n_tokens), WeightSum: float64(r.weight_sum), GradNorm: float64(r.grad_norm),
		LearningRate: float64(r.learning_rate), TokensPerSecond: float64(r.tokens_per_second),
		Step: int64(r.step)}
}

// Cancel stops the running step (it returns StatusCancelled, nothing changed); safe from any
// goroutine. When no step runs, the next one is cancelled.
func (t *Trainer) Cancel() error {
	return t.with(func(p *C.kiln_trainer) error {
		t.cancelMu.Lock()
		t.explicit = true
		t.cancelMu.Unlock()
		return call(func() C.kiln_status { return C.kiln_trainer_cancel(p) })
	})
}

// SetProgress replaces the step progress callback (nil removes it); see TrainerOptions.Progress.
func (t *Trainer) SetProgress(fn func(fraction float32, stage string) bool) error {
	var h cgo.Handle
	if fn != nil {
		h = cgo.NewHandle(t.progressState(fn))
	}
	err := t.with(func(p *C.kiln_trainer) error {
		return call(func() C.kiln_status { return C.kiln_go_trainer_set_progress(p, C.uintptr_t(h)) })
	})
	if err != nil {
		if h != 0 {
			h.Delete()
		}
		return err
	}
	t.mu.Lock()
	old := t.progress
	t.progress = h
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
	err := t.with(func(p *C.kiln_trainer) error {
		var needed C.size_t
		in := (*C.int32_t)(ptrOf(inputs))
		return call(func() C.kiln_status {
			status := C.kiln_trainer_forward(p, in, C.int32_t(batchSize), C.int32_t(seqLen),
				C.kiln_trainer_output(what), nil, 0, &needed)
			if status != C.KILN_ERR_BUFFER_TOO_SMALL {
				return status
			}
			out = make([]float32, int(needed))
			return C.kiln_trainer_forward(p, in, C.int32_t(batchSize), C.int32_t(seqLen),
				C.kiln_trainer_output(what), (*C.float)(ptrOf(out)), needed, &needed)
		})
	})
	runtime.KeepAlive(inputs)
	return out, err
}

// Snapshot hands out the current weights as a new Model for generation (MTP heads excluded).
func (t *Trainer) Snapshot() (*Model, error) {
	m := &Model{rt: t.rt}
	err := t.with(func(p *C.kiln_trainer) error {
		return call(func() C.kiln_status { return C.kiln_trainer_snapshot(p, &m.ptr) })
	})
	if err != nil {
		return nil, err
	}
	return adoptModel(m), nil
}

// DataState is the opaque bytes saved with checkpoints for the caller's data loader.
func (t *Trainer) DataState() ([]byte, error) {
	var out []byte
	err := t.with(func(p *C.kiln_trainer) error {
		state, err := fill(func(buf *byte, capacity C.size_t, size *C.size_t) C.kiln_status {
			return C.kiln_trainer_get_data_state(p, unsafe.Pointer(buf), capacity, size)
		})
		out = append([]byte{}, state...)
		return err
	})
	return out, err
}

// SetDataState replaces the data state (copied; at most 1 MiB).
func (t *Trainer) SetDataState(state []byte) error {
	err := t.with(func(p *C.kiln_trainer) error {
		return call(func() C.kiln_status {
			return C.kiln_trainer_set_data_state(p, unsafe.Pointer(ptrOf(state)), C.size_t(len(state)))
		})
	})
	runtime.KeepAlive(state)
	return err
}

// Save writes a checkpoint atomically (a crash leaves the previous file intact).
func (t *Trainer) Save(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return t.with(func(p *C.kiln_trainer) error {
		return call(func() C.kiln_status { return C.kiln_checkpoint_save(p, cpath) })
	})
}

// ExportHF writes the current weights as a Hugging Face model directory that transformers (and
// Runtime.LoadModel) load.
func (t *Trainer) ExportHF(directory string) error {
	cdir := C.CString(directory)
	defer C.free(unsafe.Pointer(cdir))
	return t.with(func(p *C.kiln_trainer) error {
		return call(func() C.kiln_status { return C.kiln_trainer_export_hf(p, cdir) })
	})
}
