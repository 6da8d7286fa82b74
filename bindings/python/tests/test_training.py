"""Tests of the training API of the kiln Python binding (kiln.Model.create, kiln.Trainer).

TrainingErrorTest runs against any libkiln. TrainingTest needs the training engine: it trains a
fresh tiny Llama (hidden 32, 2 layers, 4 heads, the vocabulary of models/kjv-tiny's tokenizer) on
fixed text. Its references are independent of kiln: ln(vocab) for the loss of a freshly initialised
model, the Llama parameter count worked out from the config, and kiln's inference path (a snapshot
or an exported directory loaded back) for the trainer's own forward pass.
"""

from __future__ import annotations

import array
import json
import math
import os
import struct
import tempfile
import unittest

import kiln
from kiln._trainer import batch_tuple
from kiln_testing import SOURCE_DIR, rel_l2

KJV_TINY = SOURCE_DIR / "models" / "kjv-tiny"
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and "
        "void; and darkness was upon the face of the deep.")
B, T = 2, 8


def cpu_runtime() -> kiln.Runtime:
    # One thread: the CI machine has two cores shared with the rest of the test suite.
    return kiln.Runtime(kiln.Backend.CPU, n_threads=1)


def tiny_config(vocab: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "vocab_size": vocab, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 0}


def llama_parameter_count(cfg: dict) -> int:
    """Parameters of a tied-embedding Llama, from the architecture's definition."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    attention = h * h + 2 * h * kv + h * h  # q, k, v, o
    layer = attention + 3 * h * f + 2 * h  # gate/up/down + two RMSNorms
    return v * h + cfg["num_hidden_layers"] * layer + h  # embeddings + layers + final norm


def safetensors_blobs(path: str) -> dict:
    """Each tensor's raw bytes in a .safetensors file, read from the format's definition: an 8-byte
    little-endian header size, a JSON header of {name: {dtype, shape, data_offsets}}, the data."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    return {name: data[t["data_offsets"][0]:t["data_offsets"][1]]
            for name, t in header.items() if name != "__metadata__"}


def fixed_batch(tokenizer: kiln.Tokenizer):
    """[B, T] inputs and next-token targets cut from TEXT."""
    ids = tokenizer.encode(TEXT)
    assert len(ids) > B * T, f"TEXT tokenizes to {len(ids)} ids; {B * T + 1} needed"
    inputs = [ids[r * T:(r + 1) * T] for r in range(B)]
    targets = [ids[r * T + 1:(r + 1) * T + 1] for r in range(B)]
    return inputs, targets


class TrainingErrorTest(unittest.TestCase):
    """Errors and argument checks that hold with or without the training engine."""

    @classmethod
    def setUpClass(cls):
        cls.runtime = cpu_runtime()
        with kiln.Tokenizer.load(KJV_TINY) as tok:
            cls.vocab = tok.vocab_size

    @classmethod
    def tearDownClass(cls):
        cls.runtime.close()

    def test_config_that_is_not_json_raises_format_error(self):
        with self.assertRaises(kiln.FormatError) as e:
            kiln.Model.create(self.runtime, "{not json", tokenizer=KJV_TINY)
        self.assertEqual(e.exception.status_name, "KILN_ERR_FORMAT")
        self.assertIn("JSON", e.exception.message)

    def test_unsupported_architecture_raises_unsupported_error_naming_it(self):
        cfg = dict(tiny_config(self.vocab), architectures=["BertForMaskedLM"])
        with self.assertRaises(kiln.UnsupportedError) as e:
            kiln.Model.create(self.runtime, cfg)
        self.assertEqual(e.exception.status, kiln.raw.KILN_ERR_UNSUPPORTED)
        self.assertIn("BertForMaskedLM", e.exception.message)

    def test_missing_tokenizer_raises_not_found(self):
        with self.assertRaises(kiln.NotFoundError) as e:
            kiln.Model.create(self.runtime, tiny_config(self.vocab), tokenizer=KJV_TINY / "no-such-dir")
        self.assertIn("no-such-dir", e.exception.message)

    def test_raw_calls_on_a_null_trainer_raise_invalid_argument(self):
        self.assertEqual(kiln.raw.kiln_trainer_cancel(None), kiln.raw.KILN_ERR_INVALID_ARGUMENT)
        self.assertIn("trainer", kiln.raw.kiln_last_error())
        batch = (1, 2, array.array("i", [1, 2]), array.array("i", [2, 3]), None, None)
        self.assertEqual(kiln.raw.kiln_train_step(None, batch, None), kiln.raw.KILN_ERR_INVALID_ARGUMENT)
        kiln.raw.kiln_trainer_free(None)  # a no-op, as for every handle

    def test_batch_arrays_are_checked_against_the_batch_shape_before_kiln_reads_them(self):
        with self.assertRaisesRegex(ValueError, "targets has shape"):
            batch_tuple([[1, 2, 3]], [[1, 2]])
        with self.assertRaisesRegex(ValueError, "rows of equal"):
            batch_tuple([[1, 2], [3]], [[1, 2], [3]])
        short = (1, 3, array.array("i", [1, 2]), array.array("i", [1, 2, 3]), None, None)
        with self.assertRaisesRegex(ValueError, "inputs holds 2 items but batch_size"):
            kiln.raw.kiln_train_step(None, short, None)
        rows, cols = batch_tuple([[1, 2], [3, 4]], [[2, 3], [4, 5]], mask=[[True, False], [1, 0]])[:2]
        self.assertEqual((rows, cols), (2, 2))

    def test_trainer_option_defaults_are_those_kiln_h_documents(self):
        o = kiln.raw.kiln_trainer_options()
        self.assertEqual(kiln.raw.kiln_trainer_options_default(o), kiln.raw.KILN_OK)
        self.assertEqual(o.optimizer, kiln.Optimizer.ADAMW)
        self.assertAlmostEqual(o.learning_rate, 3e-4, places=9)
        self.assertAlmostEqual(o.beta1, 0.9, places=6)
        self.assertAlmostEqual(o.beta2, 0.95, places=6)
        self.assertAlmostEqual(o.weight_decay, 0.1, places=6)
        self.assertAlmostEqual(o.muon_learning_rate, 0.02, places=6)
        self.assertEqual((o.muon_ns_steps, o.grad_accum_steps, o.seed, o.n_mtp_heads), (5, 1, 1337, 0))
        self.assertEqual(o.max_grad_norm, 1.0)
        self.assertEqual(o.residual_dropout, 0.0)
        self.assertEqual(o.schedule, kiln.LrSchedule.CONSTANT)
        c = kiln.raw.kiln_model_create_options()
        self.assertEqual(kiln.raw.kiln_model_create_options_default(c), kiln.raw.KILN_OK)
        self.assertEqual((c.seed, c.tokenizer_path), (1337, None))

    def test_param_groups_take_roles_by_enum_or_name_and_reject_negative_numbers(self):
        self.assertEqual([int(r) for r in kiln.ParamRole], list(range(6)))
        self.assertEqual(kiln.ParamGroup("embedding", 0.0).role, kiln.ParamRole.EMBEDDING)
        self.assertEqual(kiln.ParamGroup(kiln.raw.KILN_PARAM_BIAS).role, kiln.ParamRole.BIAS)
        with self.assertRaisesRegex(ValueError, "ParamGroup.role is 'lm_head'"):
            kiln.ParamGroup("lm_head")
        # kiln reads a negative number as "not set"; the binding's "not set" is None.
        with self.assertRaisesRegex(ValueError, "learning_rate is -0.001"):
            kiln.ParamGroup("matrix", learning_rate=-1e-3)
        with self.assertRaisesRegex(ValueError, "weight_decay is nan"):
            kiln.ParamGroup("norm", weight_decay=float("nan"))

    def test_a_closed_model_cannot_make_a_trainer(self):
        model = self.runtime.load_model(SOURCE_DIR / "tests" / "fixtures" / "tiny-qwen2")
        model.close()
        with self.assertRaises(kiln.Error):
            kiln.Trainer(model)


class TrainingTest(unittest.TestCase):
    """Needs the training engine (kiln_model_create / kiln_trainer_create working)."""

    @classmethod
    def setUpClass(cls):
        cls.runtime = cpu_runtime()
        cls.tokenizer = kiln.Tokenizer.load(KJV_TINY)
        cls.config = tiny_config(cls.tokenizer.vocab_size)
        cls.inputs, cls.targets = fixed_batch(cls.tokenizer)

    @classmethod
    def tearDownClass(cls):
        cls.tokenizer.close()
        cls.runtime.close()

    def fresh_model(self) -> kiln.Model:
        model = kiln.Model.create(self.runtime, self.config, seed=7, tokenizer=KJV_TINY)
        self.addCleanup(model.close)
        return model

    def trainer(self, **options) -> kiln.Trainer:
        trainer = kiln.Trainer(self.fresh_model(), **{"learning_rate": 3e-3, **options})
        self.addCleanup(trainer.close)
        return trainer

    def test_residual_dropout_reaches_kiln(self):
        with self.assertRaisesRegex(kiln.InvalidArgumentError, "residual_dropout is 1"):
            self.trainer(residual_dropout=1.0)
        trainer = self.trainer(residual_dropout=0.2)
        before = trainer.eval_loss(self.inputs, self.targets).loss
        step = trainer.step(self.inputs, self.targets)
        self.assertNotEqual(step.loss, before)  # a train step's loss is the thinned model's

    def test_data_parallel_reaches_kiln(self):
        # A CPU runtime has no NCCL group ids, and its trainer cannot join a group; a bad rank is
        # named before that, and the trainer keeps working after the refusals.
        with self.assertRaisesRegex(kiln.UnsupportedError, "CUDA runtime"):
            self.runtime.nccl_id()
        trainer = self.trainer()
        with self.assertRaisesRegex(kiln.InvalidArgumentError, "world_size 2 and rank 5"):
            trainer.join_data_parallel(2, 5, bytes(128))
        with self.assertRaisesRegex(kiln.UnsupportedError, "CUDA trainer"):
            trainer.join_data_parallel(1, 0, bytes(range(128)))
        with self.assertRaises(ValueError):
            trainer.join_data_parallel(1, 0, b"short")
        # shard_optimizer_state reaches kiln: with Muon it is refused by name, before the engine.
        muon = self.trainer(optimizer=kiln.Optimizer.MUON)
        with self.assertRaisesRegex(kiln.UnsupportedError, "Muon"):
            muon.join_data_parallel(1, 0, bytes(128), shard_optimizer_state=True)
        with self.assertRaisesRegex(kiln.UnsupportedError, "CUDA trainer"):
            muon.join_data_parallel(1, 0, bytes(128), shard_optimizer_state=False)
        self.assertTrue(math.isfinite(trainer.step(self.inputs, self.targets).loss))

    def test_a_fresh_model_has_the_configured_shape_and_tokenizer(self):
        model = self.fresh_model()
        info = model.info
        self.assertEqual(info.architecture, "LlamaForCausalLM")
        self.assertEqual((info.vocab_size, info.hidden_size, info.n_layers, info.n_heads),
                         (self.tokenizer.vocab_size, 32, 2, 4))
        self.assertEqual(info.n_parameters, llama_parameter_count(self.config))
        self.assertEqual(model.tokenize(TEXT, add_special=False), self.tokenizer.encode(TEXT))
        # the same config given as JSON text makes the same model
        same = kiln.Model.create(self.runtime, json.dumps(self.config), seed=7)
        self.addCleanup(same.close)
        self.assertEqual(same.info.n_parameters, info.n_parameters)

    def test_loss_starts_at_ln_vocab_and_decreases_over_steps(self):
        trainer = self.trainer()
        self.assertEqual(trainer.info.step, 0)
        results = [trainer.step(self.inputs, self.targets) for _ in range(6)]
        losses = [r.loss for r in results]
        # A freshly initialised model predicts close to uniformly: loss ~ ln(vocab).
        self.assertLess(abs(losses[0] - math.log(self.tokenizer.vocab_size)), 0.3, losses)
        self.assertLess(losses[-1], losses[0] - 0.5, losses)
        self.assertEqual([r.step for r in results], [1, 2, 3, 4, 5, 6])
        self.assertEqual(trainer.info.step, 6)
        first = results[0]
        self.assertEqual((first.n_tokens, first.weight_sum), (B * T, B * T))
        self.assertGreater(first.grad_norm, 0)
        self.assertEqual(first.objective, first.loss)  # no MTP heads
        self.assertEqual(first.mtp_losses, ())

    def test_eval_loss_changes_nothing(self):
        trainer = self.trainer()
        trainer.step(self.inputs, self.targets)
        a = trainer.eval_loss(self.inputs, self.targets)
        b = trainer.eval_loss(self.inputs, self.targets)
        self.assertEqual(a.loss, b.loss)
        self.assertEqual((a.step, trainer.info.step, a.grad_norm), (1, 1, 0.0))
        stepped = trainer.step(self.inputs, self.targets)  # the step's loss is on the same weights
        self.assertAlmostEqual(stepped.loss, a.loss, delta=1e-6 * abs(a.loss))

    def test_lists_memoryviews_and_numpy_arrays_give_the_same_loss(self):
        trainer = self.trainer()
        want = trainer.eval_loss(self.inputs, self.targets).loss

        def view(rows, code):
            flat = array.array(code, [x for row in rows for x in row])
            return memoryview(flat).cast("B").cast(code, (len(rows), len(rows[0])))

        got = trainer.eval_loss(view(self.inputs, "i"), view(self.targets, "i")).loss
        self.assertEqual(got, want)
        try:
            import numpy as np
        except ImportError:
            return  # the list and memoryview paths above are what this environment has
        got = trainer.eval_loss(np.array(self.inputs, dtype=np.int64), np.array(self.targets, dtype=np.int32),
                                mask=np.ones((B, T), dtype=bool)).loss
        self.assertEqual(got, want)

    def test_weights_and_masks_follow_the_normalisation_of_kiln_h(self):
        trainer = self.trainer()
        full = trainer.eval_loss(self.inputs, self.targets)
        # Masking the second row leaves the first row's mean; weighting rows 1:0 does the same.
        mask = [[1] * T, [0] * T]
        first_row = trainer.eval_loss(self.inputs[:1], self.targets[:1]).loss
        masked = trainer.eval_loss(self.inputs, self.targets, mask=mask)
        weighted = trainer.eval_loss(self.inputs, self.targets, weights=[[2.0] * T, [0.0] * T])
        self.assertEqual(masked.n_tokens, T)
        self.assertAlmostEqual(masked.loss, first_row, delta=1e-5 * first_row)
        self.assertAlmostEqual(weighted.loss, first_row, delta=1e-5 * first_row)
        self.assertNotEqual(masked.loss, full.loss)

    def test_an_all_zero_mask_raises_invalid_argument_and_changes_nothing(self):
        trainer = self.trainer()
        with self.assertRaises(kiln.InvalidArgumentError) as e:
            trainer.step(self.inputs, self.targets, mask=[[0] * T] * B)
        self.assertEqual(e.exception.status_name, "KILN_ERR_INVALID_ARGUMENT")
        self.assertTrue(e.exception.message)
        self.assertEqual(trainer.info.step, 0)

    def test_checkpoint_resume_continues_exactly(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "run.ckpt")
            a = self.trainer()
            a.step(self.inputs, self.targets)
            a.step(self.inputs, self.targets)
            a.data_state = b"cursor=2\x00\xff"
            a.save(path)
            uninterrupted = a.step(self.inputs, self.targets)
            with kiln.Trainer.load(self.runtime, path) as b:
                self.assertEqual(b.info.step, 2)
                self.assertEqual(b.data_state, b"cursor=2\x00\xff")
                resumed = b.step(self.inputs, self.targets)
            self.assertEqual(resumed.step, 3)
            self.assertEqual(resumed.loss, uninterrupted.loss)  # bit-identical (kiln.h)

    def test_data_state_round_trips(self):
        trainer = self.trainer()
        self.assertEqual(trainer.data_state, b"")
        state = bytes(range(256)) * 4
        trainer.data_state = state
        self.assertEqual(trainer.data_state, state)
        trainer.data_state = bytearray(b"")
        self.assertEqual(trainer.data_state, b"")
        with self.assertRaises(kiln.InvalidArgumentError):
            trainer.data_state = bytes((1 << 20) + 1)

    def test_progress_callback_sees_the_stages_and_can_cancel_the_step(self):
        # Two micro-batches: kiln.h promises "forward" before each one's forward + backward pass
        # (fraction = the share done) and "optimizer" before the update (fraction 1).
        stages = []
        trainer = self.trainer(grad_accum_steps=2,
                               progress=lambda fraction, stage: stages.append((stage, fraction)))
        trainer.step(self.inputs, self.targets)
        self.assertEqual(stages, [("forward", 0.0), ("forward", 0.5), ("optimizer", 1.0)])
        before = trainer.eval_loss(self.inputs, self.targets).loss
        trainer.progress = lambda fraction, stage: stage == "optimizer"  # True cancels
        with self.assertRaises(kiln.CancelledError):
            trainer.step(self.inputs, self.targets)
        self.assertEqual(trainer.info.step, 1)
        trainer.progress = lambda fraction, stage: 1 / 0
        with self.assertRaises(ZeroDivisionError):
            trainer.step(self.inputs, self.targets)
        self.assertEqual(trainer.info.step, 1)

        def cancel_through_the_trainer(fraction, stage):
            trainer.cancel()
            return False

        trainer.progress = cancel_through_the_trainer
        with self.assertRaises(kiln.CancelledError):
            trainer.step(self.inputs, self.targets)
        self.assertEqual(trainer.info.step, 1)
        self.assertEqual(trainer.eval_loss(self.inputs, self.targets).loss, before)  # weights unchanged
        trainer.progress = None
        self.assertEqual(trainer.step(self.inputs, self.targets).step, 2)

    def test_param_groups_freeze_roles_and_train_the_thawed_one(self):
        freeze_all = [kiln.ParamGroup(role, learning_rate=0.0) for role in kiln.ParamRole]
        # A learning rate of 0 freezes a role (kiln.h): with every role frozen a step sees a gradient
        # but changes no weight, decay included.
        frozen = self.trainer(param_groups=freeze_all, weight_decay=0.5)
        before = frozen.eval_loss(self.inputs, self.targets).loss
        self.assertGreater(frozen.step(self.inputs, self.targets).grad_norm, 0)
        self.assertEqual(frozen.eval_loss(self.inputs, self.targets).loss, before)
        # Thawing the norms alone (a later group for a role replaces an earlier one; a tuple with the
        # role's name works too) moves exactly the norm weights of the exported model.
        thawed = self.trainer(param_groups=freeze_all + [("norm", 1e-2)])
        with tempfile.TemporaryDirectory() as tmp:
            thawed.export_hf(os.path.join(tmp, "a"))
            thawed.step(self.inputs, self.targets)
            thawed.export_hf(os.path.join(tmp, "b"))
            a = safetensors_blobs(os.path.join(tmp, "a", "model.safetensors"))
            b = safetensors_blobs(os.path.join(tmp, "b", "model.safetensors"))
        self.assertEqual(a.keys(), b.keys())
        changed = sorted(name for name in a if a[name] != b[name])
        norms = sorted(name for name in a if "norm" in name)
        self.assertEqual(len(norms), 2 * 2 + 1, sorted(a))  # two per layer and the final one
        self.assertEqual(changed, norms)
        self.assertLess(thawed.eval_loss(self.inputs, self.targets).loss, before)

    def test_a_role_kiln_does_not_know_is_rejected_by_kiln_naming_the_group(self):
        options = kiln.raw.kiln_trainer_options()
        kiln.raw.kiln_trainer_options_default(options)
        groups = kiln.raw.kiln_py_param_groups([(0, -1.0, -1.0), (99, 0.0, -1.0)])
        kiln.raw.kiln_py_trainer_options_set_param_groups(options, groups)
        status, handle = kiln.raw.kiln_trainer_create(self.fresh_model().handle, options)
        self.assertEqual(status, kiln.raw.KILN_ERR_INVALID_ARGUMENT)
        self.assertIsNone(handle)
        self.assertIn("param_groups[1].role", kiln.raw.kiln_last_error())

    def test_forward_returns_every_heads_logits_and_the_hidden_state(self):
        trainer = self.trainer(n_mtp_heads=1)
        vocab = self.tokenizer.vocab_size
        logits = trainer.forward(self.inputs)
        self.assertEqual(tuple(logits.shape), (2, B, T, vocab))
        self.assertEqual(logits.nbytes, 4 * (1 + 1) * B * T * vocab)
        hidden = trainer.forward(self.inputs, what="hidden")
        self.assertEqual(tuple(hidden.shape), (B, T, 32))
        result = trainer.step(self.inputs, self.targets)
        self.assertEqual(len(result.mtp_losses), 1)
        self.assertAlmostEqual(result.objective, result.loss + result.mtp_losses[0], delta=1e-6 * result.objective)

    def test_snapshot_and_export_run_the_trained_weights_in_kiln_inference(self):
        trainer = self.trainer()
        for _ in range(3):
            trainer.step(self.inputs, self.targets)
        row = self.inputs[0]
        main = trainer.forward([row])
        flat = list(memoryview(main).cast("B").cast("f")) if isinstance(main, memoryview) else main.ravel()
        vocab = self.tokenizer.vocab_size
        want = flat[: T * vocab]  # the main head of the one row
        with trainer.snapshot() as snap, snap.session() as s:
            self.assertEqual(snap.info.architecture, "LlamaForCausalLM")
            got = s.forward(row, kiln.LogitsMode.ALL)
            got = got.ravel() if hasattr(got, "ravel") else memoryview(got).cast("B").cast("f")
            self.assertLess(rel_l2(got, want), 1e-4)
        with tempfile.TemporaryDirectory() as tmp:
            trainer.export_hf(tmp)
            self.assertTrue(os.path.exists(os.path.join(tmp, "config.json")))
            self.assertTrue(os.path.exists(os.path.join(tmp, "model.safetensors")))
            with self.runtime.load_model(tmp) as exported, exported.session() as s:
                got = s.forward(row, kiln.LogitsMode.ALL)
                got = got.ravel() if hasattr(got, "ravel") else memoryview(got).cast("B").cast("f")
                self.assertLess(rel_l2(got, want), 1e-4)
                self.assertEqual(exported.tokenize(TEXT, add_special=False), self.tokenizer.encode(TEXT))

    def test_closing_the_runtime_closes_its_trainers_first(self):
        rt = cpu_runtime()
        model = kiln.Model.create(rt, self.config)
        trainer = kiln.Trainer(model)
        model.close()  # the trainer has its own copy of the weights
        self.assertEqual(trainer.step(self.inputs, self.targets).step, 1)
        rt.close()
        self.assertTrue(trainer.closed)
        with self.assertRaises(kiln.Error):
            trainer.step(self.inputs, self.targets)


if __name__ == "__main__":
    unittest.main()
