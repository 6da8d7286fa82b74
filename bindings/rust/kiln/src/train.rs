//! Training: `Model::create` (a fresh model from a config) and `Trainer` (steps, evaluation,
//! forward, checkpoints, export). Batch semantics (targets of -1, masks, weights, the loss
//! normalisation) are kiln.h's ("Training").
use crate::error::{check, fill, Error, Result};
use crate::model::{Model, ModelHandle};
use crate::runtime::{Runtime, RuntimeHandle};
use crate::sys;
use std::any::Any;
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most extra future-token (MTP) heads a trainer may have.
pub const MAX_MTP_HEADS: usize = sys::KILN_MAX_MTP_HEADS as usize;

fn invalid(message: String) -> Error {
    Error::new(sys::KILN_ERR_INVALID_ARGUMENT, message)
}

fn c_path(path: &Path, what: &str) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("{} {:?} contains a NUL byte", what, path)))
}

/// Options of `Model::create`; `Default` is kiln's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCreateOptions {
    /// Initialisation seed.
    pub seed: u64,
    /// A tokenizer.json file or a directory holding one; None = no tokenizer (ids only).
    pub tokenizer_path: Option<PathBuf>,
}

impl Default for ModelCreateOptions {
    fn default() -> Self {
        // SAFETY: zeroed C struct filled by kiln.
        let mut raw: sys::kiln_model_create_options = unsafe { std::mem::zeroed() };
        unsafe { sys::kiln_model_create_options_default(&mut raw, std::mem::size_of_val(&raw)) };
        ModelCreateOptions {
            seed: raw.seed,
            tokenizer_path: None,
        }
    }
}

impl Model {
    /// A fresh model for training from a Hugging Face style config.json text, its weights
    /// initialised from `options.seed` as the family's reference code does.
    pub fn create(
        runtime: &Runtime,
        config_json: &str,
        options: &ModelCreateOptions,
    ) -> Result<Model> {
        let tokenizer = match &options.tokenizer_path {
            Some(p) => Some(c_path(p, "tokenizer path")?),
            None => None,
        };
        // SAFETY: zeroed C struct filled by kiln; the path outlives the call.
        let mut raw: sys::kiln_model_create_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_model_create_options_default(&mut raw, std::mem::size_of_val(&raw))
        })?;
        raw.seed = options.seed;
        raw.tokenizer_path = tokenizer.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
        let mut model = std::ptr::null_mut();
        check(unsafe {
            sys::kiln_model_create(
                runtime.handle.raw,
                config_json.as_ptr() as *const c_char,
                config_json.len(),
                &raw,
                &mut model,
            )
        })?;
        Ok(adopt_model(model, runtime.handle.clone()))
    }
}

fn adopt_model(raw: *mut sys::kiln_model, runtime: Arc<RuntimeHandle>) -> Model {
    Model {
        handle: Arc::new(ModelHandle::new(raw, runtime)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimizer {
    AdamW,
    /// nanochat's recipe: Muon on the block matrices, AdamW on the rest.
    Muon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    Constant,
    WarmupCosine,
    WarmupLinear,
    WarmupStableDecay,
}

/// What `Trainer::forward` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainerOutput {
    /// `[1 + n_mtp_heads][B][T][vocab]`, the main head first.
    Logits,
    /// `[B][T][hidden]`: the trunk's output.
    Hidden,
}

/// The kinds of trainable tensor a `ParamGroup` applies to (kiln.h's `kiln_param_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamRole {
    /// 2-D weights inside blocks (attention, MLP).
    Matrix,
    /// The token embedding (also the head when tied).
    Embedding,
    /// Learned positions (GPT-2).
    Position,
    /// An untied lm_head.
    Head,
    /// Norm weights.
    Norm,
    /// Biases.
    Bias,
}

impl ParamRole {
    fn to_raw(self) -> sys::kiln_param_role {
        match self {
            ParamRole::Matrix => sys::KILN_PARAM_MATRIX,
            ParamRole::Embedding => sys::KILN_PARAM_EMBEDDING,
            ParamRole::Position => sys::KILN_PARAM_POSITION,
            ParamRole::Head => sys::KILN_PARAM_HEAD,
            ParamRole::Norm => sys::KILN_PARAM_NORM,
            ParamRole::Bias => sys::KILN_PARAM_BIAS,
        }
    }
}

/// A parameter group, as torch's: the AdamW-updated tensors of `role` get their own learning rate
/// (`None` = the trainer's; `Some(0.0)` freezes them) and/or weight decay (`None` = the role's
/// default). A later group for the same role replaces an earlier one; in Muon mode matrices
/// follow the `muon_*` options instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    pub role: ParamRole,
    pub learning_rate: Option<f32>,
    pub weight_decay: Option<f32>,
}

impl ParamGroup {
    /// A group for `role` that inherits everything (set the fields, or use `frozen`).
    pub fn new(role: ParamRole) -> Self {
        ParamGroup {
            role,
            learning_rate: None,
            weight_decay: None,
        }
    }

    /// A group that freezes the tensors of `role` (learning rate 0).
    pub fn frozen(role: ParamRole) -> Self {
        ParamGroup {
            learning_rate: Some(0.0),
            ..ParamGroup::new(role)
        }
    }
}

/// Options of `Trainer::new`; `Default` is kiln's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerOptions {
    pub optimizer: Optimizer,
    /// Peak LR of AdamW-updated tensors.
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub muon_learning_rate: f32,
    pub muon_momentum: f32,
    pub muon_ns_steps: i32,
    pub param_groups: Vec<ParamGroup>,
    pub schedule: LrSchedule,
    pub warmup_steps: i64,
    pub total_steps: i64,
    pub min_lr_ratio: f32,
    pub decay_fraction: f32,
    /// Micro-batches per step; must divide the batch's rows.
    pub grad_accum_steps: i32,
    /// Global-norm clipping; 0 = off.
    pub max_grad_norm: f32,
    pub seed: u64,
    pub n_mtp_heads: i32,
    pub mtp_loss_weights: [f32; MAX_MTP_HEADS],
    /// GPT-2-style residual dropout probability in [0, 1) (train steps only); 0 = off.
    pub residual_dropout: f32,
}

fn raw_trainer_options() -> sys::kiln_trainer_options {
    // SAFETY: zeroed C struct filled by kiln.
    let mut raw: sys::kiln_trainer_options = unsafe { std::mem::zeroed() };
    let status =
        unsafe { sys::kiln_trainer_options_default(&mut raw, std::mem::size_of_val(&raw)) };
    debug_assert_eq!(status, sys::KILN_OK);
    raw
}

impl Default for TrainerOptions {
    fn default() -> Self {
        let raw = raw_trainer_options();
        TrainerOptions {
            optimizer: if raw.optimizer == sys::KILN_OPTIMIZER_MUON {
                Optimizer::Muon
            } else {
                Optimizer::AdamW
            },
            learning_rate: raw.learning_rate,
            beta1: raw.beta1,
            beta2: raw.beta2,
            epsilon: raw.epsilon,
            weight_decay: raw.weight_decay,
            muon_learning_rate: raw.muon_learning_rate,
            muon_momentum: raw.muon_momentum,
            muon_ns_steps: raw.muon_ns_steps,
            param_groups: Vec::new(),
            schedule: match raw.schedule {
                sys::KILN_LR_WARMUP_COSINE => LrSchedule::WarmupCosine,
                sys::KILN_LR_WARMUP_LINEAR => LrSchedule::WarmupLinear,
                sys::KILN_LR_WARMUP_STABLE_DECAY => LrSchedule::WarmupStableDecay,
                _ => LrSchedule::Constant,
            },
            warmup_steps: raw.warmup_steps,
            total_steps: raw.total_steps,
            min_lr_ratio: raw.min_lr_ratio,
            decay_fraction: raw.decay_fraction,
            grad_accum_steps: raw.grad_accum_steps,
            max_grad_norm: raw.max_grad_norm,
            seed: raw.seed,
            n_mtp_heads: raw.n_mtp_heads,
            mtp_loss_weights: raw.mtp_loss_weights,
            residual_dropout: raw.residual_dropout,
        }
    }
}

impl TrainerOptions {
    /// The C struct, pointing into `groups` (which must outlive its use).
    fn to_raw(&self, groups: &mut Vec<sys::kiln_param_group>) -> Result<sys::kiln_trainer_options> {
        for (i, g) in self.param_groups.iter().enumerate() {
            // kiln reads a negative number as "not set": here that is None, so a negative (or NaN)
            // Some is a mistake, not a silent fallback.
            for (name, value) in [
                ("learning_rate", g.learning_rate),
                ("weight_decay", g.weight_decay),
            ] {
                if let Some(v) = value.filter(|v| !(*v >= 0.0)) {
                    return Err(invalid(format!(
                        "param_groups[{}].{} is {}; expected a number >= 0 or None",
                        i, name, v
                    )));
                }
            }
            groups.push(sys::kiln_param_group {
                role: g.role.to_raw(),
                learning_rate: g.learning_rate.unwrap_or(-1.0),
                weight_decay: g.weight_decay.unwrap_or(-1.0),
            });
        }
        let mut raw = raw_trainer_options();
        raw.optimizer = match self.optimizer {
            Optimizer::AdamW => sys::KILN_OPTIMIZER_ADAMW,
            Optimizer::Muon => sys::KILN_OPTIMIZER_MUON,
        };
        raw.learning_rate = self.learning_rate;
        raw.beta1 = self.beta1;
        raw.beta2 = self.beta2;
        raw.epsilon = self.epsilon;
        raw.weight_decay = self.weight_decay;
        raw.muon_learning_rate = self.muon_learning_rate;
        raw.muon_momentum = self.muon_momentum;
        raw.muon_ns_steps = self.muon_ns_steps;
        raw.param_groups = if groups.is_empty() {
            std::ptr::null()
        } else {
            groups.as_ptr()
        };
        raw.n_param_groups = groups.len();
        raw.schedule = match self.schedule {
            LrSchedule::Constant => sys::KILN_LR_CONSTANT,
            LrSchedule::WarmupCosine => sys::KILN_LR_WARMUP_COSINE,
            LrSchedule::WarmupLinear => sys::KILN_LR_WARMUP_LINEAR,
            LrSchedule::WarmupStableDecay => sys::KILN_LR_WARMUP_STABLE_DECAY,
        };
        raw.warmup_steps = self.warmup_steps;
        raw.total_steps = self.total_steps;
        raw.min_lr_ratio = self.min_lr_ratio;
        raw.decay_fraction = self.decay_fraction;
        raw.grad_accum_steps = self.grad_accum_steps;
        raw.max_grad_norm = self.max_grad_norm;
        raw.seed = self.seed;
        raw.n_mtp_heads = self.n_mtp_heads;
        raw.mtp_loss_weights = self.mtp_loss_weights;
        raw.residual_dropout = self.residual_dropout;
        Ok(raw)
    }
}

/// A batch of `batch_size` rows × `seq_len` positions, borrowed: `inputs` and `targets` hold
/// B*T ids (a target of -1 is not counted), `loss_mask` (0 = not counted) and `loss_weights`
/// (>= 0) are optional, B*T each.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: &'a [i32],
    pub targets: &'a [i32],
    pub loss_mask: Option<&'a [u8]>,
    pub loss_weights: Option<&'a [f32]>,
}

impl<'a> Batch<'a> {
    pub fn new(batch_size: usize, seq_len: usize, inputs: &'a [i32], targets: &'a [i32]) -> Self {
        Batch {
            batch_size,
            seq_len,
            inputs,
            targets,
            loss_mask: None,
            loss_weights: None,
        }
    }

    pub fn with_mask(self, loss_mask: &'a [u8]) -> Self {
        Batch {
            loss_mask: Some(loss_mask),
            ..self
        }
    }

    pub fn with_weights(self, loss_weights: &'a [f32]) -> Self {
        Batch {
            loss_weights: Some(loss_weights),
            ..self
        }
    }

    /// The C view; fails unless every slice holds exactly B*T items (kiln reads that many).
    fn to_raw(&self) -> Result<sys::kiln_batch> {
        let (rows, cols) = dims(self.batch_size, self.seq_len)?;
        let n = self.batch_size * self.seq_len;
        let lens = [
            ("inputs", Some(self.inputs.len())),
            ("targets", Some(self.targets.len())),
            ("loss_mask", self.loss_mask.map(<[u8]>::len)),
            ("loss_weights", self.loss_weights.map(<[f32]>::len)),
        ];
        for (name, len) in lens {
            if let Some(len) = len.filter(|&len| len != n) {
                return Err(invalid(format!(
                    "Batch::{} holds {} items but batch_size * seq_len is {} * {} = {}",
                    name, len, self.batch_size, self.seq_len, n
                )));
            }
        }
        Ok(sys::kiln_batch {
            struct_size: std::mem::size_of::<sys::kiln_batch>(),
            batch_size: rows,
            seq_len: cols,
            inputs: self.inputs.as_ptr(),
            targets: self.targets.as_ptr(),
            loss_mask: self.loss_mask.map_or(std::ptr::null(), <[u8]>::as_ptr),
            loss_weights: self.loss_weights.map_or(std::ptr::null(), <[f32]>::as_ptr),
        })
    }
}

fn dims(batch_size: usize, seq_len: usize) -> Result<(i32, i32)> {
    let fits = |v: usize| i32::try_from(v).ok();
    match (
        fits(batch_size),
        fits(seq_len),
        batch_size.checked_mul(seq_len),
    ) {
        (Some(b), Some(t), Some(_)) => Ok((b, t)),
        _ => Err(invalid(format!(
            "batch of {} × {} positions is too large",
            batch_size, seq_len
        ))),
    }
}

/// What a step (or an evaluation) measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainResult {
    /// The main (next-token) head's loss.
    pub loss: f64,
    /// loss + Σ MTP weight · head loss: what was minimised.
    pub objective: f64,
    /// One loss per MTP head.
    pub mtp_losses: Vec<f64>,
    /// Counted positions of the main head.
    pub n_tokens: i64,
    pub weight_sum: f64,
    /// Before clipping; 0 for an evaluation.
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    /// Optimizer steps taken so far, this one included.
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainerInfo {
    pub step: i64,
    pub n_parameters: i64,
    pub n_mtp_heads: i32,
    pub architecture: String,
}

pub(crate) struct TrainerHandle {
    raw: *mut sys::kiln_trainer,
    _runtime: Arc<RuntimeHandle>,
}

// SAFETY: the handle moves between threads with its Trainer; the only call made through a shared
// reference from another thread is kiln_trainer_cancel, which kiln.h allows from any thread.
unsafe impl Send for TrainerHandle {}
unsafe impl Sync for TrainerHandle {}

impl Drop for TrainerHandle {
    fn drop(&mut self) {
        // SAFETY: the last Trainer/TrainerCancelHandle is gone, so no call is running.
        unsafe { sys::kiln_trainer_free(self.raw) }
    }
}

type ProgressFn = dyn FnMut(f32, &str) -> bool + Send;

/// A progress closure lent to kiln for the trainer's life, plus the panic it raised, if any.
struct ProgressState {
    f: Box<ProgressFn>,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

unsafe extern "C" fn trainer_progress_trampoline(
    fraction: f32,
    stage: *const c_char,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: user_data is the Trainer's boxed ProgressState: kiln calls it only during a step,
    // which holds `&mut Trainer`; stage is NUL-terminated and valid during the call.
    let state = &mut *(user_data as *mut ProgressState);
    if state.panic.is_some() {
        return 1;
    }
    let stage = CStr::from_ptr(stage).to_string_lossy();
    let f = &mut state.f;
    match catch_unwind(AssertUnwindSafe(|| f(fraction, &stage))) {
        Ok(stop) => stop as c_int,
        Err(payload) => {
            state.panic = Some(payload);
            1
        }
    }
}

/// Trains a model on its own float32 copy of the weights (the model may be dropped after
/// `Trainer::new`). `Send`, not `Sync` (kiln.h: one thread at a time): every call that changes it
/// takes `&mut self`; `cancel_handle()` stops a step from another thread.
///
/// ```compile_fail
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<kiln::Trainer>(); // one thread at a time (kiln.h)
/// ```
pub struct Trainer {
    handle: Arc<TrainerHandle>,
    progress: Option<Box<ProgressState>>,
    n_mtp_heads: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// Stops the step running on a trainer (or its next step) from any thread.
#[derive(Clone)]
pub struct TrainerCancelHandle {
    handle: Arc<TrainerHandle>,
}

impl TrainerCancelHandle {
    pub fn cancel(&self) -> Result<()> {
        check(unsafe { sys::kiln_trainer_cancel(self.handle.raw) })
    }
}

impl Trainer {
    /// A trainer over a float32 copy of `model`'s weights.
    pub fn new(model: &Model, options: &TrainerOptions) -> Result<Trainer> {
        let mut groups = Vec::new();
        let raw = options.to_raw(&mut groups)?;
        let mut trainer = std::ptr::null_mut();
        // SAFETY: options and the groups they point at outlive the call (kiln copies them).
        check(unsafe { sys::kiln_trainer_create(model.handle.raw, &raw, &mut trainer) })?;
        Self::adopt(trainer, model.handle.runtime().clone())
    }

    /// Recreates a trainer from a checkpoint written by `save`, ready to continue exactly where it
    /// was (the progress closure is not saved: call `set_progress` again).
    pub fn load(runtime: &Runtime, path: impl AsRef<Path>) -> Result<Trainer> {
        let cpath = c_path(path.as_ref(), "checkpoint path")?;
        let mut trainer = std::ptr::null_mut();
        check(unsafe {
            sys::kiln_checkpoint_load(runtime.handle.raw, cpath.as_ptr(), &mut trainer)
        })?;
        Self::adopt(trainer, runtime.handle.clone())
    }

    fn adopt(raw: *mut sys::kiln_trainer, runtime: Arc<RuntimeHandle>) -> Result<Trainer> {
        let mut trainer = Trainer {
            handle: Arc::new(TrainerHandle {
                raw,
                _runtime: runtime,
            }),
            progress: None,
            n_mtp_heads: 0,
            _not_sync: PhantomData,
        };
        trainer.n_mtp_heads = trainer.info()?.n_mtp_heads.max(0) as usize;
        Ok(trainer)
    }

    fn raw(&self) -> *mut sys::kiln_trainer {
        self.handle.raw
    }

    pub fn cancel_handle(&self) -> TrainerCancelHandle {
        TrainerCancelHandle {
            handle: self.handle.clone(),
        }
    }

    pub fn info(&self) -> Result<TrainerInfo> {
        // SAFETY: zeroed then struct_size set, as kiln.h asks.
        let mut i: sys::kiln_trainer_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of_val(&i);
        check(unsafe { sys::kiln_trainer_get_info(self.raw(), &mut i) })?;
        // SAFETY: valid while the trainer lives; copied now.
        let architecture = unsafe { CStr::from_ptr(i.architecture) }
            .to_string_lossy()
            .into_owned();
        Ok(TrainerInfo {
            step: i.step,
            n_parameters: i.n_parameters,
            n_mtp_heads: i.n_mtp_heads,
            architecture,
        })
    }

    /// Calls `progress(fraction, stage)` during every step: stage "forward" before each
    /// micro-batch's forward + backward pass (fraction = the share of micro-batches done), then
    /// "optimizer" before the update (fraction 1); returning true cancels the step (ErrorKind::Cancelled, nothing changed). A
    /// panic in it cancels the step and is resumed by `step`.
    pub fn set_progress<F>(&mut self, progress: F) -> Result<()>
    where
        F: FnMut(f32, &str) -> bool + Send + 'static,
    {
        let mut state = Box::new(ProgressState {
            f: Box::new(progress),
            panic: None,
        });
        let user_data = &mut *state as *mut ProgressState as *mut c_void;
        // SAFETY: the box is kept in self.progress until replaced, cleared or dropped.
        check(unsafe {
            sys::kiln_trainer_set_progress(self.raw(), Some(trainer_progress_trampoline), user_data)
        })?;
        self.progress = Some(state);
        Ok(())
    }

    /// Removes the progress closure.
    pub fn clear_progress(&mut self) -> Result<()> {
        check(unsafe { sys::kiln_trainer_set_progress(self.raw(), None, std::ptr::null_mut()) })?;
        self.progress = None;
        Ok(())
    }

    fn run(&mut self, batch: &Batch<'_>, evaluate: bool) -> Result<TrainResult> {
        let raw = batch.to_raw()?;
        // SAFETY: zeroed then struct_size set.
        let mut r: sys::kiln_train_result = unsafe { std::mem::zeroed() };
        r.struct_size = std::mem::size_of_val(&r);
        // SAFETY: the batch's slices (checked to hold B*T items) outlive the call.
        let status = unsafe {
            if evaluate {
                sys::kiln_eval_loss(self.raw(), &raw, &mut r)
            } else {
                sys::kiln_train_step(self.raw(), &raw, &mut r)
            }
        };
        let error = if status == sys::KILN_OK {
            None
        } else {
            Some(Error::last(status))
        };
        if let Some(payload) = self.progress.as_mut().and_then(|p| p.panic.take()) {
            std::panic::resume_unwind(payload);
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(TrainResult {
            loss: r.loss,
            objective: r.objective,
            mtp_losses: r.mtp_losses[..self.n_mtp_heads.min(MAX_MTP_HEADS)].to_vec(),
            n_tokens: r.n_tokens,
            weight_sum: r.weight_sum,
            grad_norm: r.grad_norm,
            learning_rate: r.learning_rate,
            tokens_per_second: r.tokens_per_second,
            step: r.step,
        })
    }

    /// One optimizer step on `batch`. On any error the weights and optimizer state are unchanged.
    pub fn step(&mut self, batch: &Batch<'_>) -> Result<TrainResult> {
        self.run(batch, false)
    }

    /// The loss on `batch` without updating anything (grad_norm 0, step unchanged).
    pub fn eval_loss(&mut self, batch: &Batch<'_>) -> Result<TrainResult> {
        self.run(batch, true)
    }

    /// Runs the current weights on `inputs` (batch_size * seq_len ids); see `TrainerOutput` for
    /// the layout of the float32 result.
    pub fn forward(
        &mut self,
        inputs: &[i32],
        batch_size: usize,
        seq_len: usize,
        what: TrainerOutput,
    ) -> Result<Vec<f32>> {
        Batch::new(batch_size, seq_len, inputs, inputs).to_raw()?;
        let (rows, cols) = dims(batch_size, seq_len)?;
        let what = match what {
            TrainerOutput::Logits => sys::KILN_TRAINER_OUTPUT_LOGITS,
            TrainerOutput::Hidden => sys::KILN_TRAINER_OUTPUT_HIDDEN,
        };
        let raw = self.raw();
        // SAFETY: inputs holds rows * cols ids (checked above); the buffer is kiln's protocol.
        fill(|out, capacity, needed| unsafe {
            sys::kiln_trainer_forward(
                raw,
                inputs.as_ptr(),
                rows,
                cols,
                what,
                out,
                capacity,
                needed,
            )
        })
    }

    /// The current weights as a new Model for generation (MTP heads excluded).
    pub fn snapshot(&self) -> Result<Model> {
        let mut model = std::ptr::null_mut();
        check(unsafe { sys::kiln_trainer_snapshot(self.raw(), &mut model) })?;
        Ok(adopt_model(model, self.handle._runtime.clone()))
    }

    /// Opaque bytes saved with checkpoints for the caller's data loader.
    pub fn data_state(&self) -> Result<Vec<u8>> {
        fill(|buf: *mut u8, capacity, size| unsafe {
            sys::kiln_trainer_get_data_state(self.raw(), buf as *mut c_void, capacity, size)
        })
    }

    /// Replaces the data state (copied; at most 1 MiB).
    pub fn set_data_state(&mut self, state: &[u8]) -> Result<()> {
        check(unsafe {
            sys::kiln_trainer_set_data_state(
                self.raw(),
                state.as_ptr() as *const c_void,
                state.len(),
            )
        })
    }

    /// Writes a checkpoint atomically (a crash leaves the previous file intact).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let cpath = c_path(path.as_ref(), "checkpoint path")?;
        check(unsafe { sys::kiln_checkpoint_save(self.raw(), cpath.as_ptr()) })
    }

    /// Writes the current weights as a Hugging Face model directory (transformers and
    /// `Model::load` load it).
    pub fn export_hf(&self, directory: impl AsRef<Path>) -> Result<()> {
        let cdir = c_path(directory.as_ref(), "export directory")?;
        check(unsafe { sys::kiln_trainer_export_hf(self.raw(), cdir.as_ptr()) })
    }

    /// Joins a data-parallel group (`kiln_trainer_join_data_parallel`; kiln.h has the semantics):
    /// every rank calls it with the same id (from [`Runtime::nccl_id`] on one rank) and
    /// `world_size` and its own `rank`; blocks until all have joined.
    pub fn join_data_parallel(
        &mut self,
        world_size: i32,
        rank: i32,
        id: &[u8; sys::KILN_NCCL_ID_BYTES as usize],
    ) -> Result<()> {
        self.join_data_parallel_sharded(world_size, rank, id, false)
    }

    /// [`Trainer::join_data_parallel`] with `shard_optimizer_state` (ZeRO-1): each rank keeps (and
    /// checkpoints) its slice of the AdamW state; every rank then calls `save_checkpoint`
    /// together.
    pub fn join_data_parallel_sharded(
        &mut self,
        world_size: i32,
        rank: i32,
        id: &[u8; sys::KILN_NCCL_ID_BYTES as usize],
        shard_optimizer_state: bool,
    ) -> Result<()> {
        // SAFETY: zeroed then filled by kiln_data_parallel_options_default, as kiln.h asks.
        let mut o: sys::kiln_data_parallel_options = unsafe { std::mem::zeroed() };
        check(unsafe {
            sys::kiln_data_parallel_options_default(&mut o, std::mem::size_of_val(&o))
        })?;
        o.world_size = world_size;
        o.rank = rank;
        o.shard_optimizer_state = i32::from(shard_optimizer_state);
        o.id.bytes = *id;
        check(unsafe { sys::kiln_trainer_join_data_parallel(self.raw(), &o) })
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        if self.progress.is_some() {
            // A TrainerCancelHandle may keep kiln's trainer alive: leave it no pointer to the
            // closure freed with this Trainer.
            // SAFETY: no step runs (it would hold &mut self).
            unsafe { sys::kiln_trainer_set_progress(self.raw(), None, std::ptr::null_mut()) };
        }
    }
}
